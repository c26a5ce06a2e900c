#!/usr/bin/env bash
# Builds Helm (pinned) from the Go module proxy into ~/.cache/sandgate/helm/<version>,
# once, and prints the binary's path. No download site: `go install` of the helm.sh
# module, static (CGO_ENABLED=0), stripped, with the local Go toolchain (Go >= 1.25),
# stamped with its version as Helm's Makefile does (`helm version` says v4.3.2, not v4.3).
#
#   scripts/build-helm.sh          build (or reuse) and print the path of bin/helm
#   scripts/build-helm.sh --help   this text
#
# HELM_VERSION overrides the pin, SANDGATE_HELM_CACHE the directory. The build goes to
# a temporary directory renamed into place, so an interrupted one leaves nothing. First
# build: about 5 minutes on 2 cores.
set -euo pipefail
# The Go module version of Helm 4 (helm.sh/helm/v4); a v3 version selects helm.sh/helm/v3.
HELM_VERSION=${HELM_VERSION:-v4.3.2}
CACHE=${SANDGATE_HELM_CACHE:-$HOME/.cache/sandgate/helm/$HELM_VERSION}
BIN=$CACHE/bin

log() { printf 'helm: %s\n' "$*" >&2; }
die() { printf 'helm: ERROR: %s\n' "$*" >&2; exit 2; }

case "${1:-}" in
    "") ;;
    -h|--help) sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument: $1 (try --help)" ;;
esac

if [[ ! -x "$BIN/helm" ]]; then
    command -v go >/dev/null || die "Go is needed to build helm"
    major=${HELM_VERSION%%.*}
    mkdir -p "$CACHE"
    exec 9>"$CACHE/.lock"
    flock -n 9 || { log "another build holds $CACHE/.lock; waiting for it"; flock 9; }
    if [[ ! -x "$BIN/helm" ]]; then
        tmp=$CACHE/bin.tmp.$$
        rm -rf "$tmp"
        trap 'rm -rf "$tmp"' EXIT
        start=$SECONDS
        log "building $HELM_VERSION (helm.sh/helm/$major, once)..."
        # shellcheck source=lib/go-serial.sh
        . "$(dirname "${BASH_SOURCE[0]}")/lib/go-serial.sh"
        GOBIN="$tmp" GOTOOLCHAIN=local GOFLAGS=-buildvcs=false GOWORK=off CGO_ENABLED=0 \
            go_serial helm nice -n 10 go install -trimpath \
            -ldflags "-s -w -X helm.sh/helm/$major/internal/version.version=$HELM_VERSION" \
            "helm.sh/helm/$major/cmd/helm@$HELM_VERSION" ||
            die "go install helm.sh/helm/$major/cmd/helm@$HELM_VERSION failed"
        [[ -x $tmp/helm ]] || die "go install left no helm binary in $tmp"
        rm -rf "$BIN"
        mv "$tmp" "$BIN"
        trap - EXIT
        log "built in $((SECONDS - start))s"
    fi
fi
echo "$BIN/helm"
