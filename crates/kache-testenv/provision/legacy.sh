#!/usr/bin/env bash
# Provision kache's legacy test control plane: etcd from Debian's packages, and
# kube-apiserver built once from Debian's source package (patched for Go >= 1.18),
# cached on disk keyed by version. kache-testenv embeds this script and runs it when
# nothing is cached; `just control-plane` runs it ahead of time.
#
# Prints the folder holding `etcd` and `kube-apiserver` on its last line of stdout,
# in the envtest layout (`KUBEBUILDER_ASSETS`). Safe to run again: a cached build is reused.
set -euo pipefail

# The one place the legacy server's version is written: kache-testenv reads this line
# (keep it `K8S_VERSION=<version>`) to find the cache folder.
K8S_VERSION=1.20.2
DEB_ORIG=kubernetes_1.20.5+really$K8S_VERSION.orig.tar.gz
CACHE_ROOT=${KACHE_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kache}
ASSETS=$CACHE_ROOT/assets-v$K8S_VERSION

log() { echo "[provision] $*" >&2; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

apt_updated=false
apt_install() {
    local missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if ! $apt_updated; then
        log "apt-get update"
        as_root apt-get update -qq >&2
        apt_updated=true
    fi
    log "installing ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}

if [ -x "$ASSETS/kube-apiserver" ] && [ -x "$ASSETS/etcd" ]; then
    log "cached control plane v$K8S_VERSION in $ASSETS"
    echo "$ASSETS"
    exit 0
fi

mkdir -p "$ASSETS"
# One provisioning run at a time: test binaries started together all find the cache empty.
exec 9>"$CACHE_ROOT/.provision.lock"
if command -v flock >/dev/null 2>&1 && ! flock -n 9; then
    log "waiting for another provisioning run to finish"
    flock 9
    if [ -x "$ASSETS/kube-apiserver" ] && [ -x "$ASSETS/etcd" ]; then
        log "cached control plane v$K8S_VERSION in $ASSETS"
        echo "$ASSETS"
        exit 0
    fi
fi
apt_install etcd-server etcd-client openssl ca-certificates
ln -sf "$(command -v etcd)" "$ASSETS/etcd"
ln -sf "$(command -v etcdctl)" "$ASSETS/etcdctl"

if [ ! -x "$ASSETS/kube-apiserver" ]; then
    apt_install golang-go rsync jq make golang-github-modern-go-reflect2-dev
    # Source packages need a deb-src entry mirroring the existing binary one.
    if ! grep -rqs '^Types:.*deb-src' /etc/apt/sources.list.d/ && ! grep -qs '^deb-src' /etc/apt/sources.list; then
        log "adding a deb-src entry"
        src=/etc/apt/sources.list.d/debian.sources
        [ -f "$src" ] || { log "no $src to mirror; add a deb-src entry by hand"; exit 1; }
        sed 's/^Types: deb$/Types: deb-src/' "$src" | as_root tee /etc/apt/sources.list.d/kache-deb-src.sources >/dev/null
        as_root apt-get update -qq >&2
    fi
    work=$(mktemp -d "${TMPDIR:-/tmp}/kache-k8s-build.XXXXXX")
    trap 'rm -rf "$work"' EXIT
    cd "$work"
    log "fetching Debian's kubernetes source package"
    apt-get source --download-only kubernetes >&2
    log "unpacking $DEB_ORIG"
    tar xzf "$DEB_ORIG"
    cd "kubernetes-$K8S_VERSION"

    # reflect2 v1.0.1 (vendored) crashes under Go >= 1.18; Debian ships v1.0.2.
    r2=$(dpkg -L golang-github-modern-go-reflect2-dev | grep -m1 '/github.com/modern-go/reflect2$')
    rm -rf vendor/github.com/modern-go/reflect2
    mkdir -p vendor/github.com/modern-go/reflect2
    (cd "$r2" && find . -maxdepth 1 -type f ! -name go.mod ! -name '*_test.go' -exec cp {} "$OLDPWD/vendor/github.com/modern-go/reflect2/" \;)
    sed -i 's#\(github.com/modern-go/reflect2 => github.com/modern-go/reflect2\) v1.0.1#\1 v1.0.2#' go.mod
    sed -i 's/^# github.com\/modern-go\/reflect2 v1.0.1/# github.com\/modern-go\/reflect2 v1.0.2/; s/^# github.com\/modern-go\/reflect2 => github.com\/modern-go\/reflect2 v1.0.1/# github.com\/modern-go\/reflect2 => github.com\/modern-go\/reflect2 v1.0.2/' vendor/modules.txt
    grep -q 'reflect2 v1.0.2' go.mod || { log "go.mod patch did not apply"; exit 1; }
    [ "$(grep -c 'modern-go/reflect2.*v1.0.2' vendor/modules.txt)" -ge 2 ] || { log "modules.txt patch did not apply"; exit 1; }

    log "building kube-apiserver v$K8S_VERSION (5-8 minutes on 2 cores the first time)"
    mkdir -p "$work/home" "$work/gopath"
    HOME=$work/home GOPATH=$work/gopath GOCACHE=$CACHE_ROOT/go-build \
        make WHAT=cmd/kube-apiserver >&2
    install -m 0755 _output/local/bin/linux/amd64/kube-apiserver "$ASSETS/kube-apiserver.tmp"
    mv "$ASSETS/kube-apiserver.tmp" "$ASSETS/kube-apiserver"
    log "built $ASSETS/kube-apiserver"
fi
echo "$ASSETS"
