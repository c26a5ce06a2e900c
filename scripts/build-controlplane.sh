#!/usr/bin/env bash
# Build a real, pinned Kubernetes v1.35.4 control plane for sandgate's
# integration tests, using only the Go module proxy:
#
#   kube-apiserver, kube-controller-manager, kube-scheduler, kubectl
#       from tests/controlplane/go.mod (k8s.io/kubernetes v1.35.4 with every
#       staging module replaced by its published v0.35.4)
#   kwok (fake kubelet)
#       from tests/controlplane/kwok/go.mod (sigs.k8s.io/kwok v0.8.0, its own
#       dependency graph: it needs k8s.io/* v0.36.1)
#
# Output: $CACHE/bin/{kube-apiserver,kube-controller-manager,kube-scheduler,
# kubectl,kwok}, where CACHE is
#   ${SANDGATE_CONTROLPLANE_CACHE:-$HOME/.cache/sandgate/controlplane/v1.35.4-<hash>}
# and <hash> is the first 12 hex digits of
#   cat tests/controlplane/go.sum tests/controlplane/kwok/go.sum | sha256sum
# so a change of pins lands in a new directory. If every binary is already
# there, nothing is built ("control plane: cached at ...").
#
# If KUBEBUILDER_ASSETS is set and holds an executable kube-apiserver, that
# directory is used instead and nothing is built.
#
# etcd is not built here: it ships as a plain file inside the crates.io crate
# etcd-bin-vendored-linux-amd64 3.7.2 (bin/etcd). If cargo has already fetched
# that crate, the script copies it to $CACHE/bin/etcd as well (best effort), so
# that $CACHE/bin can serve as a KUBEBUILDER_ASSETS directory.
#
# Usage:
#   scripts/build-controlplane.sh               build (or reuse) the binaries
#   scripts/build-controlplane.sh --print-dir   print the bin dir, build nothing
#
# The first build compiles all of Kubernetes: expect ~15-25 minutes on 2 cores. Go builds
# run one at a time on the machine (scripts/lib/go-serial.sh).
set -euo pipefail

KUBE_VERSION=v1.35.4
KUBE_MAJOR=1
KUBE_MINOR=35
KWOK_VERSION=v0.8.0
# Fixed so that the binaries do not depend on when they were built.
BUILD_DATE=1970-01-01T00:00:00Z

log() { printf 'control plane: %s\n' "$*" >&2; }
die() { printf 'control plane: ERROR: %s\n' "$*" >&2; exit 1; }

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MOD_DIR=$ROOT/tests/controlplane
KWOK_DIR=$MOD_DIR/kwok

print_only=0
case "${1:-}" in
    "") ;;
    --print-dir) print_only=1 ;;
    -h|--help) sed -n '2,32p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument: $1 (try --help)" ;;
esac

if [[ -n "${KUBEBUILDER_ASSETS:-}" ]]; then
    if [[ -x "$KUBEBUILDER_ASSETS/kube-apiserver" ]]; then
        if (( print_only )); then
            printf '%s\n' "$KUBEBUILDER_ASSETS"
        else
            log "KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS holds kube-apiserver; it will be used, nothing to build"
        fi
        exit 0
    fi
    log "KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS has no executable kube-apiserver; building our own"
fi

for f in "$MOD_DIR/go.mod" "$MOD_DIR/go.sum" "$KWOK_DIR/go.mod" "$KWOK_DIR/go.sum"; do
    [[ -f "$f" ]] || die "missing $f"
done

hash=$(cat "$MOD_DIR/go.sum" "$KWOK_DIR/go.sum" | sha256sum | cut -c1-12)
CACHE=${SANDGATE_CONTROLPLANE_CACHE:-$HOME/.cache/sandgate/controlplane/$KUBE_VERSION-$hash}
BIN=$CACHE/bin

if (( print_only )); then
    printf '%s\n' "$BIN"
    exit 0
fi

# name:module-dir:package; the binaries of one module are built by one `go build`, so
# Go links one while it compiles for the next.
TARGETS=(
    "kube-apiserver:$MOD_DIR:k8s.io/kubernetes/cmd/kube-apiserver"
    "kube-controller-manager:$MOD_DIR:k8s.io/kubernetes/cmd/kube-controller-manager"
    "kube-scheduler:$MOD_DIR:k8s.io/kubernetes/cmd/kube-scheduler"
    "kubectl:$MOD_DIR:k8s.io/kubernetes/cmd/kubectl"
    "kwok:$KWOK_DIR:sigs.k8s.io/kwok/cmd/kwok"
)

# Best effort: copy etcd from the etcd-bin-vendored crate, if cargo fetched it.
copy_etcd() {
    [[ -x "$BIN/etcd" ]] && return 0
    [[ "$(uname -s)-$(uname -m)" == Linux-x86_64 ]] || return 0
    local src
    for src in "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/etcd-bin-vendored-linux-amd64-3.7.2/bin/etcd; do
        if [[ -x "$src" ]] && cp "$src" "$BIN/.etcd.tmp.$$" && mv -f "$BIN/.etcd.tmp.$$" "$BIN/etcd"; then
            log "etcd copied from $src"
            return 0
        fi
    done
    return 0
}

all_present() {
    local t
    for t in "${TARGETS[@]}"; do
        [[ -x "$BIN/${t%%:*}" ]] || return 1
    done
}

if all_present; then
    copy_etcd
    log "cached at $BIN"
    exit 0
fi

command -v go >/dev/null 2>&1 || die "go not found in PATH (Go >= 1.26 is needed)"

export GOTOOLCHAIN=local
export GOFLAGS="-mod=mod -buildvcs=false"
export GOWORK=off
# Upstream builds these components static, without cgo.
export CGO_ENABLED=0
# GOCACHE / GOMODCACHE: Go's defaults ($HOME/.cache/go-build, $HOME/go/pkg/mod).

go_ver=$(go env GOVERSION) || die "cannot run 'go env GOVERSION'"
go_minor=$(sed -E 's/^go1\.([0-9]+).*/\1/' <<<"$go_ver")
if ! [[ "$go_minor" =~ ^[0-9]+$ ]] || (( go_minor < 26 )); then
    die "$go_ver is too old: kwok $KWOK_VERSION needs Go >= 1.26 (GOTOOLCHAIN=local, no toolchain download)"
fi

mkdir -p "$BIN" || die "cannot create $BIN"

# One build at a time per cache dir (parallel test runs may all call this).
exec 9>"$CACHE/.lock"
if ! flock -n 9; then
    log "another build holds $CACHE/.lock; waiting for it"
    flock 9
fi
if all_present; then
    copy_etcd
    log "cached at $BIN"
    exit 0
fi

k8s_ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    k8s_ldflags+=" -X $pkg.gitVersion=$KUBE_VERSION"
    k8s_ldflags+=" -X $pkg.gitMajor=$KUBE_MAJOR"
    k8s_ldflags+=" -X $pkg.gitMinor=$KUBE_MINOR"
    k8s_ldflags+=" -X $pkg.gitTreeState=clean"
    k8s_ldflags+=" -X $pkg.buildDate=$BUILD_DATE"
done

# shellcheck source=lib/go-serial.sh
. "$ROOT/scripts/lib/go-serial.sh"

# Builds the missing binaries of one module dir into $BIN: into a temporary directory
# first, renamed into place, so an interrupted build leaves no output.
build_module() { # dir ldflags
    local dir=$1 ldflags=$2 t name pkgs=() names=() start=$SECONDS tmp
    for t in "${TARGETS[@]}"; do
        name=${t%%:*}
        [[ ${t#*:} == "$dir":* && ! -x $BIN/$name ]] || continue
        names+=("$name")
        pkgs+=("${t##*:}")
    done
    ((${#pkgs[@]})) || return 0
    log "building ${names[*]}..."
    tmp=$(mktemp -d "$BIN/.build.XXXXXX")
    if ! (cd "$dir" && nice -n 10 go build -trimpath -ldflags "$ldflags" -o "$tmp/" "${pkgs[@]}"); then
        rm -rf "$tmp"
        die "building ${names[*]} in $dir failed (see the go output above)"
    fi
    for name in "${names[@]}"; do mv -f "$tmp/$name" "$BIN/$name"; done
    rm -rf "$tmp"
    log "${names[*]} done in $((SECONDS - start))s"
}

log "building Kubernetes $KUBE_VERSION + kwok $KWOK_VERSION with $go_ver into $BIN"
start_all=$SECONDS
rm -rf "$BIN"/.build.* # left by a killed build (this one holds the lock)
go_serial "control plane" build_module "$MOD_DIR" "$k8s_ldflags"
go_serial "control plane" build_module "$KWOK_DIR" "-s -w"

all_present || die "some binaries are missing from $BIN after the build"
copy_etcd
log "built in $((SECONDS - start_all))s at $BIN"
