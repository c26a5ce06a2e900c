#!/usr/bin/env bash
# Build (or reuse) everything the real node of the test suite needs, from the Go module
# proxy and Debian's packages only (no registry, no download site):
#
#   kubelet                   k8s.io/kubernetes/cmd/kubelet v1.35.4, from the wrapper
#                             module tests/controlplane (shares Go's build cache with
#                             scripts/build-controlplane.sh: same flags)
#   runsc,                    gvisor.dev/gvisor pinned in tests/realnode/gvisor/go.mod,
#   containerd-shim-runsc-v1  with two patches (tests/realnode/gvisor/patch.py)
#   kube-router               v2.1.0: its firewall is the NetworkPolicy engine
#   images/pause.tar          a static C pause binary (tests/realnode/images/pause.c)
#   images/python.tar         Debian bookworm minbase + python3 (3.11), curl, netcat,
#                             imported as docker.io/library/python:3.11-slim so the
#                             article's template runs verbatim
#
# Each part is cached by its own inputs, in ~/.cache/sandgate/node/<part>-<hash>
# (<hash>: the first 12 hex digits of the sha256 of what it is built from: pins,
# go.sum files, patches, sources), so changing one part rebuilds only that part. The
# parts are then hard-linked into ${SANDGATE_NODE_CACHE:-~/.cache/sandgate/node/<hash
# of all parts>}/{bin,images}; when that is complete nothing is built ("node: cached
# at ...").
#
#   scripts/build-node.sh               build (or reuse)
#   scripts/build-node.sh --images      build (or reuse) the two images only: debootstrap
#                                       is network and disk, so CI runs it beside the
#                                       Go builds (scripts/build-tools.sh)
#   scripts/build-node.sh --print-dir   print the assembled directory, build nothing
#
# The Go parts are built under the node's lock and, like every Go build of ours, one at
# a time on the machine (scripts/lib/go-serial.sh); the images under a lock of their own.
#
# gVisor is patched twice for this kind of machine: tests/realnode/gvisor/patch.py says
# what and why.
# Needs: go >= 1.25, gcc + libc6-dev (static pause), debootstrap, python3; run as root
# for debootstrap. First build: about 30 minutes on 2 cores.
set -euo pipefail

KUBE_VERSION=v1.35.4
KUBE_MAJOR=1
KUBE_MINOR=35
KUBE_ROUTER_VERSION=v2.1.0
DEBIAN_SUITE=bookworm
BUILD_DATE=1970-01-01T00:00:00Z

log() { printf 'node: %s\n' "$*" >&2; }
die() { printf 'node: ERROR: %s\n' "$*" >&2; exit 1; }

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CP_MOD=$ROOT/tests/controlplane
GV_MOD=$ROOT/tests/realnode/gvisor
IMAGES_SRC=$ROOT/tests/realnode/images

NODE_CACHE=$HOME/.cache/sandgate/node
sha() { sha256sum | cut -c1-12; }
# What each part is built from (change any of it and that part is rebuilt).
k8s_ld="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    k8s_ld+=" -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=$KUBE_MAJOR -X $pkg.gitMinor=$KUBE_MINOR"
    k8s_ld+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$BUILD_DATE"
done
PATCHES=$ROOT/tests/realnode/gvisor/patch.py
key_kubelet=$( { cat "$CP_MOD/go.sum"; echo "$k8s_ld"; } | sha)
key_gvisor=$(cat "$GV_MOD/go.mod" "$GV_MOD/go.sum" "$PATCHES" | sha)
key_router=$(echo "kube-router $KUBE_ROUTER_VERSION" | sha)
key_pause=$(cat "$IMAGES_SRC/pause.c" "$IMAGES_SRC/mkimage.py" | sha)
key_python=$( { cat "$IMAGES_SRC/mkimage.py"; echo "$DEBIAN_SUITE python3 curl netcat-openbsd ca-certificates"; } | sha)
P_KUBELET=$NODE_CACHE/kubelet-$key_kubelet
P_GVISOR=$NODE_CACHE/gvisor-$key_gvisor
P_ROUTER=$NODE_CACHE/kube-router-$key_router
P_PAUSE=$NODE_CACHE/pause-$key_pause
P_PYTHON=$NODE_CACHE/python-$key_python
CACHE=${SANDGATE_NODE_CACHE:-$NODE_CACHE/$(echo "$key_kubelet $key_gvisor $key_router $key_pause $key_python" | sha)}
BIN=$CACHE/bin
IMAGES=$CACHE/images

images_only=0
case "${1:-}" in
    "") ;;
    --images) images_only=1 ;;
    --print-dir) printf '%s\n' "$CACHE"; exit 0 ;;
    -h|--help) sed -n '2,36p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument: $1 (try --help)" ;;
esac

OUTPUTS=(bin/kubelet bin/runsc bin/containerd-shim-runsc-v1 bin/kube-router
         images/pause.tar images/python.tar)
all_present() {
    local o
    for o in "${OUTPUTS[@]}"; do [[ -s "$CACHE/$o" ]] || return 1; done
}
if all_present; then log "cached at $CACHE"; exit 0; fi

mkdir -p "$NODE_CACHE" "$P_KUBELET" "$P_GVISOR" "$P_ROUTER" "$P_PAUSE" "$P_PYTHON"
# shellcheck source=lib/go-serial.sh
. "$ROOT/scripts/lib/go-serial.sh"

# Builds into a temporary name and renames, so an interrupted build leaves no output.
gobuild() { # output dir pkg ldflags
    local out=$1 dir=$2 pkg=$3 ld=$4 start=$SECONDS
    [[ -s $out ]] && return 0
    log "building $(basename "$out") ($pkg)..."
    (cd "$dir" && nice -n 10 go build -trimpath -ldflags "$ld" -o "$out.tmp.$$" "$pkg") ||
        { rm -f "$out.tmp.$$"; die "building $pkg failed"; }
    mv -f "$out.tmp.$$" "$out"
    log "$(basename "$out") done in $((SECONDS - start))s"
}

# The images: a static pause, and Debian's python3 as the article's python:3.11-slim.
build_images() {
    exec 8>"$NODE_CACHE/.images.lock"
    flock -n 8 || { log "another build holds $NODE_CACHE/.images.lock; waiting for it"; flock 8; }
    if [[ ! -s $P_PAUSE/pause.tar ]]; then
        local rootfs=$P_PAUSE/rootfs
        rm -rf "$rootfs"; mkdir -p "$rootfs"
        gcc -Os -static -s -o "$rootfs/pause" "$IMAGES_SRC/pause.c" || die "gcc (static pause) failed: libc6-dev?"
        python3 "$IMAGES_SRC/mkimage.py" "$rootfs" registry.k8s.io/pause:3.10 "$P_PAUSE/pause.tar.tmp" --entrypoint /pause
        mv -f "$P_PAUSE/pause.tar.tmp" "$P_PAUSE/pause.tar"
        rm -rf "$rootfs"
    fi
    if [[ ! -s $P_PYTHON/python.tar ]]; then
        command -v debootstrap >/dev/null || die "debootstrap not found (apt-get install debootstrap)"
        local mirror rootfs=$P_PYTHON/rootfs start=$SECONDS
        mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
        [[ -n $mirror ]] || mirror=$(awk '/^deb / {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
        [[ -n $mirror ]] || die "no Debian mirror found in the apt sources"
        rm -rf "$rootfs"
        log "debootstrap $DEBIAN_SUITE + python3 from $mirror..."
        debootstrap --variant=minbase --include=python3,curl,netcat-openbsd,ca-certificates \
            "$DEBIAN_SUITE" "$rootfs" "$mirror" >"$P_PYTHON/debootstrap.log" 2>&1 ||
            { tail -20 "$P_PYTHON/debootstrap.log" >&2; die "debootstrap failed"; }
        rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
            "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/locale/*
        # The official image's name for the interpreter, as scripts expect it.
        ln -sf python3 "$rootfs/usr/bin/python"
        python3 "$IMAGES_SRC/mkimage.py" "$rootfs" docker.io/library/python:3.11-slim \
            "$P_PYTHON/python.tar.tmp" --cmd python3
        mv -f "$P_PYTHON/python.tar.tmp" "$P_PYTHON/python.tar"
        rm -rf "$rootfs"
        log "python image done in $((SECONDS - start))s"
    fi
    exec 8>&-
}
if ((images_only)); then
    build_images
    log "images at $P_PAUSE/pause.tar, $P_PYTHON/python.tar"
    exit 0
fi

exec 9>"$NODE_CACHE/.lock"
flock -n 9 || { log "another build holds $NODE_CACHE/.lock; waiting for it"; flock 9; }
if all_present; then log "cached at $CACHE"; exit 0; fi

command -v go >/dev/null || die "go not found"
export GOTOOLCHAIN=local GOWORK=off CGO_ENABLED=0
export GOFLAGS="-mod=mod -buildvcs=false"

# 1. kubelet, with the control plane's version stamp and flags.
go_serial node gobuild "$P_KUBELET/kubelet" "$CP_MOD" k8s.io/kubernetes/cmd/kubelet "$k8s_ld"

# 2. runsc and the shim, from patched copies of the pinned module sources.
if [[ ! -s $P_GVISOR/runsc || ! -s $P_GVISOR/containerd-shim-runsc-v1 ]]; then
    work=$P_GVISOR/build
    rm -rf "$work"
    mkdir -p "$work"
    cp "$GV_MOD/go.mod" "$GV_MOD/go.sum" "$GV_MOD/tools.go" "$work/"
    (cd "$work" && go mod download gvisor.dev/gvisor github.com/containerd/containerd/v2)
    gv=$(cd "$work" && go list -m -f '{{.Dir}}' gvisor.dev/gvisor)
    cv=$(cd "$work" && go list -m -f '{{.Dir}}' github.com/containerd/containerd/v2)
    cp -r "$gv" "$work/gvisor-src"
    cp -r "$cv" "$work/containerd-src"
    chmod -R u+w "$work/gvisor-src" "$work/containerd-src"
    python3 "$PATCHES" "$work/gvisor-src" "$work/containerd-src"
    printf 'replace gvisor.dev/gvisor => ./gvisor-src\nreplace github.com/containerd/containerd/v2 => ./containerd-src\n' >>"$work/go.mod"
    go_serial node gobuild "$P_GVISOR/runsc" "$work" gvisor.dev/gvisor/runsc "-s -w"
    go_serial node gobuild "$P_GVISOR/containerd-shim-runsc-v1" "$work" gvisor.dev/gvisor/shim "-s -w"
    rm -rf "$work"
fi

# 3. kube-router, at its own pinned module graph.
if [[ ! -s $P_ROUTER/kube-router ]]; then
    start=$SECONDS
    log "installing kube-router $KUBE_ROUTER_VERSION..."
    GOBIN=$P_ROUTER GOFLAGS=-buildvcs=false go_serial node nice -n 10 go install -trimpath -ldflags "-s -w" \
        "github.com/cloudnativelabs/kube-router/v2/cmd/kube-router@$KUBE_ROUTER_VERSION" ||
        die "go install kube-router failed"
    log "kube-router done in $((SECONDS - start))s"
fi

# 4. Images.
build_images

# 5. The assembled directory the harness uses (hard links: no copies).
mkdir -p "$BIN" "$IMAGES"
ln -f "$P_KUBELET/kubelet" "$P_GVISOR/runsc" "$P_GVISOR/containerd-shim-runsc-v1" \
    "$P_ROUTER/kube-router" "$BIN/"
ln -f "$P_PAUSE/pause.tar" "$P_PYTHON/python.tar" "$IMAGES/"

all_present || die "some outputs are missing from $CACHE"
log "built at $CACHE"
