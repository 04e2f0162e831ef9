#!/usr/bin/env bash
# Provision kache's modern test control plane: a small API server built on the
# Kubernetes 1.36 apiserver library (the Go program in ../apiserver/) and etcd 3.5,
# from Debian sid's packages. Nothing of sid is installed into the system: a private
# apt configuration under the cache downloads only the packages the program imports,
# they are unpacked into a temporary folder, and the server is built there in GOPATH
# mode. Package versions are resolved at provisioning time; the result is cached
# under a key made of those versions and of the program's sources.
#
# Prints the folder holding `etcd`, `etcdctl` and `kache-apiserver` on its last line
# of stdout. Safe to run again, and concurrently: a cached build is reused.
#
# KACHE_APISERVER_SRC: folder of the program's .go files (default: ../apiserver
# beside this script).
set -euo pipefail

GO_MINOR=1.27
# What the program and openapi-gen import (`go list -deps`), plus the toolchain and etcd.
PACKAGES=(
    golang-$GO_MINOR-go golang-$GO_MINOR-src etcd-server etcd-client
    golang-cel-cel-go-dev golang-cel-expr-dev golang-etcd-server-dev
    golang-github-antlr4-go-antlr-dev golang-github-beorn7-perks-dev
    golang-github-blang-semver-dev golang-github-cenkalti-backoff-v5-dev
    golang-github-cespare-xxhash-v2-dev golang-github-coreos-go-semver-dev
    golang-github-coreos-go-systemd-dev golang-github-davecgh-go-spew-dev
    golang-github-emicklei-go-restful-dev golang-github-evanphx-json-patch-dev
    golang-github-felixge-httpsnoop-dev golang-github-fsnotify-fsnotify-dev
    golang-github-fxamacker-cbor-dev golang-github-go-logr-logr-dev
    golang-github-go-logr-stdr-dev golang-github-go-openapi-jsonpointer-dev
    golang-github-go-openapi-jsonreference-dev golang-github-go-openapi-swag-dev
    golang-github-gogo-protobuf-dev golang-github-golang-protobuf-1-5-dev
    golang-github-google-gnostic-models-dev golang-github-google-uuid-dev
    golang-github-grpc-ecosystem-go-grpc-middleware-dev
    golang-github-grpc-ecosystem-grpc-gateway-dev golang-github-json-iterator-go-dev
    golang-github-kubernetes-gengo-dev golang-github-kylelemons-godebug-dev
    golang-github-modern-go-concurrent-dev golang-github-modern-go-reflect2-dev
    golang-github-munnerz-goautoneg-dev golang-github-nytimes-gziphandler-dev
    golang-github-pkg-errors-dev golang-github-pmezard-go-difflib-dev
    golang-github-prometheus-client-golang-dev golang-github-prometheus-client-model-dev
    golang-github-prometheus-common-dev golang-github-prometheus-procfs-dev
    golang-github-spf13-cobra-dev golang-github-spf13-pflag-dev
    golang-github-x448-float16-dev golang-go.uber-multierr-dev golang-go.uber-zap-dev
    golang-golang-x-crypto-dev golang-golang-x-exp-dev golang-golang-x-mod-dev
    golang-golang-x-net-dev golang-golang-x-oauth2-dev golang-golang-x-sync-dev
    golang-golang-x-sys-dev golang-golang-x-term-dev golang-golang-x-text-dev
    golang-golang-x-time-dev golang-golang-x-tools-dev golang-google-genproto-dev
    golang-google-grpc-dev golang-google-protobuf-dev golang-gopkg-inf.v0-dev
    golang-gopkg-natefinch-lumberjack.v2-dev golang-gopkg-yaml.v2-dev
    golang-gopkg-yaml.v3-dev golang-k8s-api-dev golang-k8s-apimachinery-dev
    golang-k8s-apiserver-dev golang-k8s-client-go-dev golang-k8s-component-base-dev
    golang-k8s-klog-dev golang-k8s-kms-dev golang-k8s-kube-openapi-dev
    golang-k8s-sigs-apiserver-network-proxy-dev golang-k8s-sigs-json-dev
    golang-k8s-sigs-randfill-dev golang-k8s-sigs-structured-merge-diff-v6-dev
    golang-k8s-sigs-yaml-dev golang-k8s-streaming-dev golang-k8s-utils-dev
    golang-opentelemetry-contrib-dev golang-opentelemetry-otel-dev
    golang-opentelemetry-proto-dev
)
# The types whose OpenAPI definitions the server needs (server-side apply).
OPENAPI_PKGS=(
    k8s.io/api/core/v1 k8s.io/api/coordination/v1 k8s.io/apimachinery/pkg/apis/meta/v1
    k8s.io/apimachinery/pkg/runtime k8s.io/apimachinery/pkg/version
    k8s.io/apimachinery/pkg/api/resource k8s.io/apimachinery/pkg/util/intstr
)
# Import path of the program inside the build's GOPATH.
GO_PKG=kache/apiserver

CACHE_ROOT=${KACHE_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kache}
# This script's own text (it is part of the cache key): from its file, or, when kache-testenv
# runs its embedded copy with `bash -c`, from the command string.
SELF=${BASH_SOURCE[0]:-}
if [ -f "$SELF" ]; then
    SCRIPT_TEXT=$(cat "$SELF")
    SRC=${KACHE_APISERVER_SRC:-$(cd "$(dirname "$SELF")" && pwd)/../apiserver}
else
    SCRIPT_TEXT=$(printf "%s" "${BASH_EXECUTION_STRING:-}") # $( ) drops trailing newlines, as above
    SRC=${KACHE_APISERVER_SRC:?set KACHE_APISERVER_SRC when running this script from a string}
fi
CURRENT=$CACHE_ROOT/modern-current
APT_DIR=$CACHE_ROOT/sid-apt

log() { echo "[provision] $*" >&2; }
die() { log "error: $*"; exit 1; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

apt_install() {
    local missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    log "installing ${missing[*]} (system apt)"
    as_root apt-get update -qq >&2
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}

# The sources and this script decide the build: hash them together.
shopt -s nullglob
go_files=("$SRC"/*.go)
shopt -u nullglob
[ ${#go_files[@]} -gt 0 ] || die "no .go files in $SRC (set KACHE_APISERVER_SRC)"
src_hash=$(
    for f in "${go_files[@]}"; do echo "== ${f##*/}"; cat "$f"; done
    echo "== provision"; printf '%s\n' "$SCRIPT_TEXT"
)
src_hash=$(sha256sum <<<"$src_hash" | cut -c1-16)

# Fast path, with no network: the last build of these sources.
cached() {
    local hash dir
    [ -f "$CURRENT" ] && read -r hash dir <"$CURRENT" || return 1
    [ "$hash" = "$src_hash" ] && [ -x "$dir/etcd" ] && [ -x "$dir/etcdctl" ] && [ -x "$dir/kache-apiserver" ] || return 1
    log "cached modern control plane in $dir"
    echo "$dir"
}
cached && exit 0
if [ "${KACHE_PROVISION:-1}" = 0 ]; then
    die "no modern control plane cached for these sources, and KACHE_PROVISION=0"
fi

mkdir -p "$CACHE_ROOT"
# One provisioning run at a time: test binaries started together all find the cache empty.
exec 9>"$CACHE_ROOT/.provision-modern.lock"
if command -v flock >/dev/null 2>&1 && ! flock -n 9; then
    log "waiting for another provisioning run to finish"
    flock 9
    cached && exit 0
fi

# A private apt configuration for sid; the system's stays untouched.
system_sources=/etc/apt/sources.list.d/debian.sources
first_field() { # the value of field $1 in the first stanza of $system_sources
    [ -f "$system_sources" ] || return 0
    awk -v f="$1:" '/^[[:space:]]*$/ { if (seen) exit; next } /^#/ { next } { seen = 1 } $1 == f { print $2; exit }' "$system_sources"
}
uri=$(first_field URIs)
uri=${uri:-http://deb.debian.org/debian}
keyring=$(first_field Signed-By)
[ -f "$keyring" ] || keyring=/usr/share/keyrings/debian-archive-keyring.gpg
[ -f "$keyring" ] || die "no Debian archive keyring ($keyring)"
case $uri in https:*) apt_install ca-certificates ;; esac

mkdir -p "$APT_DIR/lists/partial" "$APT_DIR/cache/archives/partial" "$APT_DIR/debs"
: >"$APT_DIR/status"
printf 'Types: deb\nURIs: %s\nSuites: sid\nComponents: main\nSigned-By: %s\n' "$uri" "$keyring" >"$APT_DIR/sid.sources"
APT_OPTS=(
    -o "Dir::Etc::sourcelist=$APT_DIR/sid.sources" -o Dir::Etc::sourceparts=/nonexistent
    -o "Dir::State::Lists=$APT_DIR/lists" -o "Dir::Cache=$APT_DIR/cache"
    -o "Dir::State::status=$APT_DIR/status" -o APT::Architecture=amd64
)
# As root, apt hands downloads to the user _apt, who cannot enter a private cache.
[ "$(id -u)" -ne 0 ] || APT_OPTS+=(-o APT::Sandbox::User=root)

log "updating the package lists of Debian sid ($uri)"
if ! apt-get "${APT_OPTS[@]}" update -qq >&2; then
    compgen -G "$APT_DIR/lists/*_Packages*" >/dev/null || die "apt-get update for Debian sid failed"
    log "apt-get update failed; using the package lists of an earlier run"
fi

# Resolve every package to its candidate version now: sid moves.
declare -A version
while read -r name ver; do version[$name]=$ver; done < <(
    apt-cache "${APT_OPTS[@]}" policy "${PACKAGES[@]}" 2>/dev/null |
        awk '/^[^ ].*:$/ { name = substr($1, 1, length($1) - 1) } $1 == "Candidate:" && $2 != "(none)" { print name, $2 }'
)
pins=()
for pkg in "${PACKAGES[@]}"; do
    [ -n "${version[$pkg]:-}" ] || die "Debian sid has no package $pkg"
    pins+=("$pkg=${version[$pkg]}")
done
pin_list=$(printf '%s\n' "${pins[@]}" | LC_ALL=C sort)
key=$( (echo "$pin_list"; echo "$src_hash") | sha256sum | cut -c1-12)
ASSETS=$CACHE_ROOT/modern-$key

install_current() {
    echo "$src_hash $ASSETS" >"$CURRENT.tmp"
    mv "$CURRENT.tmp" "$CURRENT"
    echo "$ASSETS"
}
if [ -x "$ASSETS/etcd" ] && [ -x "$ASSETS/etcdctl" ] && [ -x "$ASSETS/kache-apiserver" ]; then
    log "cached modern control plane in $ASSETS"
    install_current
    exit 0
fi

work=$(mktemp -d "$CACHE_ROOT/modern-build.XXXXXX")
trap 'rm -rf "$work"' EXIT

# Downloaded packages are kept (as NAME_VERSION.deb) so that a rebuild of changed
# sources downloads nothing; those of other versions are removed.
wanted=()
for pin in "${pins[@]}"; do
    [ -f "$APT_DIR/debs/${pin/=/_}.deb" ] || wanted+=("$pin")
done
if [ ${#wanted[@]} -gt 0 ]; then
    log "downloading ${#wanted[@]} packages from Debian sid"
    mkdir "$work/download"
    (cd "$work/download" && apt-get "${APT_OPTS[@]}" download -qq "${wanted[@]}" >&2)
    for deb in "$work/download"/*.deb; do
        mv "$deb" "$APT_DIR/debs/$(dpkg-deb -f "$deb" Package)_$(dpkg-deb -f "$deb" Version).deb"
    done
fi
for deb in "$APT_DIR/debs"/*.deb; do
    base=${deb##*/}
    grep -qxF "${base%.deb}" <<<"${pin_list//=/_}" || rm -f "$deb"
done

log "unpacking ${#pins[@]} packages"
root=$work/root
for pin in "${pins[@]}"; do
    dpkg-deb -x "$APT_DIR/debs/${pin/=/_}.deb" "$root"
done

# GOPATH mode over the unpacked gocode tree; nothing from the network.
mkdir -p "$work/gopath/src/$GO_PKG/openapi"
cp "${go_files[@]}" "$work/gopath/src/$GO_PKG/"
export GO111MODULE=off GOPROXY=off GOTOOLCHAIN=local CGO_ENABLED=0 GOENV=off GOFLAGS=
export GOPATH=$work/gopath:$root/usr/share/gocode GOROOT=$root/usr/lib/go-$GO_MINOR
# The build cache outlives the unpacked tree; -trimpath keeps its keys free of the
# temporary folder's name, so rebuilds are warm.
export GOCACHE=$CACHE_ROOT/go-build
go=$GOROOT/bin/go
[ -x "$go" ] || die "no Go toolchain in golang-$GO_MINOR-go"
cd "$work/gopath/src/$GO_PKG"
start=$SECONDS
log "building openapi-gen"
"$go" build -trimpath -o "$work/openapi-gen" k8s.io/kube-openapi/cmd/openapi-gen >&2
log "generating OpenAPI definitions"
: >"$work/boilerplate"
readonly_pkgs=$(IFS=,; echo "${OPENAPI_PKGS[*]}")
"$work/openapi-gen" --output-dir openapi --output-pkg "$GO_PKG/openapi" \
    --output-file zz_generated.openapi.go --go-header-file "$work/boilerplate" \
    --report-filename "$work/api-violations" --readonly-pkg "$readonly_pkgs" "${OPENAPI_PKGS[@]}" >&2

# /version reports the Kubernetes release matching the packaged library (0.X.Y is 1.X.Y).
lib=${version[golang-k8s-apiserver-dev]#*:}
lib=${lib%%-*}
kube_version=v1.${lib#0.}
log "building kache-apiserver $kube_version (3-4 minutes on 2 cores the first time)"
"$go" build -trimpath -ldflags "-X k8s.io/component-base/version.gitVersion=$kube_version \
-X k8s.io/component-base/version.gitCommit= -X k8s.io/component-base/version.gitTreeState=" \
    -o "$work/assets/kache-apiserver" . >&2
log "built in $((SECONDS - start)) s"

cp "$root/usr/bin/etcd" "$root/usr/bin/etcdctl" "$work/assets/"
echo "$pin_list" >"$work/assets/versions"
rm -rf "$ASSETS"
mv "$work/assets" "$ASSETS"
log "modern control plane in $ASSETS"
install_current
