#!/usr/bin/env bash
# Build the client-go informer runner (the Go program beside this script) from the same Debian
# sid packages as kache-testenv's modern server: this runs that server's provisioning script
# first, which downloads the packages into its private apt cache and records their versions,
# and then builds the runner in GOPATH mode from those very packages, with the same Go build
# cache. Nothing is downloaded here and nothing is installed into the system. The result is
# cached under a key made of the package versions, the program's sources and this script.
#
# Prints the path of the `kache-clientgo` binary on its last line of stdout. Safe to run again,
# and concurrently.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
provision=$here/../../crates/kache-testenv/provision/modern.sh
GO_PKG=kache/clientgo

log() { echo "[clientgo] $*" >&2; }
die() { log "error: $*"; exit 1; }

# The modern server's assets: their `versions` file lists the sid packages they were built from.
assets=$(bash "$provision" | tail -n1)
[ -f "$assets/versions" ] || die "no versions file in $assets"
CACHE_ROOT=${KACHE_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kache}
debs=$CACHE_ROOT/sid-apt/debs

shopt -s nullglob
go_files=("$here"/*.go)
shopt -u nullglob
[ ${#go_files[@]} -gt 0 ] || die "no .go files in $here"
key=$(
    cat "$assets/versions"
    for f in "${go_files[@]}"; do echo "== ${f##*/}"; cat "$f"; done
    echo "== build"; cat "${BASH_SOURCE[0]}"
)
key=$(sha256sum <<<"$key" | cut -c1-12)
out=$CACHE_ROOT/clientgo-$key
if [ -x "$out/kache-clientgo" ]; then
    log "cached client-go runner in $out"
    echo "$out/kache-clientgo"
    exit 0
fi

# The provisioning script's lock: it prunes packages of other versions from the apt cache,
# which must not happen while they are unpacked here.
exec 9>"$CACHE_ROOT/.provision-modern.lock"
command -v flock >/dev/null 2>&1 && flock 9
if [ -x "$out/kache-clientgo" ]; then
    echo "$out/kache-clientgo"
    exit 0
fi

work=$(mktemp -d "$CACHE_ROOT/clientgo-build.XXXXXX")
trap 'rm -rf "$work"' EXIT
go_minor=
while IFS='=' read -r name version; do
    case $name in
    etcd-*) continue ;; # the server's binaries, not Go sources
    golang-1.*-go) go_minor=${name#golang-} go_minor=${go_minor%-go} ;;
    esac
    deb=$debs/${name}_$version.deb
    [ -f "$deb" ] || die "$deb is missing; remove $CACHE_ROOT/modern-current and run again"
    dpkg-deb -x "$deb" "$work/root"
done <"$assets/versions"
[ -n "$go_minor" ] || die "no Go toolchain among the packages of $assets/versions"

mkdir -p "$work/gopath/src/$GO_PKG"
cp "${go_files[@]}" "$work/gopath/src/$GO_PKG/"
export GO111MODULE=off GOPROXY=off GOTOOLCHAIN=local CGO_ENABLED=0 GOENV=off GOFLAGS=
export GOPATH=$work/gopath:$work/root/usr/share/gocode GOROOT=$work/root/usr/lib/go-$go_minor
# Shared with the server's build; -trimpath keeps its keys free of the temporary folder.
export GOCACHE=$CACHE_ROOT/go-build
cd "$work/gopath/src/$GO_PKG"
start=$SECONDS
log "building the client-go runner (a few minutes the first time)"
"$GOROOT/bin/go" vet . >&2
"$GOROOT/bin/go" build -trimpath -o "$work/out/kache-clientgo" . >&2
log "built in $((SECONDS - start)) s"
rm -rf "$out"
mv "$work/out" "$out"
echo "$out/kache-clientgo"
