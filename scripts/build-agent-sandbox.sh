#!/usr/bin/env bash
# Builds kubernetes-sigs/agent-sandbox (pinned) from the Go module proxy into
# ~/.cache/sandgate/agent-sandbox/<version>, once, and prints that directory: its
# controller (bin/agent-sandbox-controller, `go install` of the module's command,
# static, stripped) and its real CRDs and RBAC as the module ships them (crds/*.yaml,
# rbac/*.yaml). The upstream tests and benchmarks run these, not stand-ins.
#
#   scripts/build-agent-sandbox.sh          build (or reuse) and print the directory
#   scripts/build-agent-sandbox.sh --help   this text
#
# AGENT_SANDBOX_VERSION overrides the pin, SANDGATE_AGENT_SANDBOX_CACHE the directory.
# The build goes to a temporary directory renamed into place, so an interrupted one
# leaves nothing. First build: a few minutes on 2 cores (controller-runtime and
# client-go, shared with the control plane's build cache).
set -euo pipefail
AGENT_SANDBOX_VERSION=${AGENT_SANDBOX_VERSION:-v1.0.1}
MODULE=sigs.k8s.io/agent-sandbox
CACHE=${SANDGATE_AGENT_SANDBOX_CACHE:-$HOME/.cache/sandgate/agent-sandbox/$AGENT_SANDBOX_VERSION}

log() { printf 'agent-sandbox: %s\n' "$*" >&2; }
die() { printf 'agent-sandbox: ERROR: %s\n' "$*" >&2; exit 2; }

case "${1:-}" in
    "") ;;
    -h|--help) sed -n '2,14p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument: $1 (try --help)" ;;
esac

ready() { [[ -x "$CACHE/bin/agent-sandbox-controller" && -d "$CACHE/crds" ]]; }

if ! ready; then
    command -v go >/dev/null || die "Go is needed to build agent-sandbox"
    mkdir -p "$(dirname "$CACHE")"
    exec 9>"$CACHE.lock"
    flock -n 9 || { log "another build holds $CACHE.lock; waiting for it"; flock 9; }
    if ! ready; then
        tmp=$CACHE.tmp.$$
        rm -rf "$tmp"
        trap 'rm -rf "$tmp"' EXIT
        mkdir -p "$tmp/bin" "$tmp/crds" "$tmp/rbac"
        start=$SECONDS
        log "building $MODULE@$AGENT_SANDBOX_VERSION (once)..."
        # shellcheck source=lib/go-serial.sh
        . "$(dirname "${BASH_SOURCE[0]}")/lib/go-serial.sh"
        # The module's go.mod asks for a newer patch toolchain than it needs; the local
        # Go (same minor) builds it.
        GOBIN="$tmp/bin" GOTOOLCHAIN=local GOFLAGS=-buildvcs=false GOWORK=off CGO_ENABLED=0 \
            go_serial agent-sandbox nice -n 10 go install -trimpath -ldflags "-s -w" \
            "$MODULE/cmd/agent-sandbox-controller@$AGENT_SANDBOX_VERSION" ||
            die "go install $MODULE/cmd/agent-sandbox-controller@$AGENT_SANDBOX_VERSION failed"
        src=$(GOFLAGS=-mod=mod GOWORK=off go mod download -json "$MODULE@$AGENT_SANDBOX_VERSION" |
            sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
        [[ -d "$src/k8s/crds" ]] || die "the module has no k8s/crds (at $src)"
        cp "$src"/k8s/crds/*.yaml "$tmp/crds/"
        cp "$src"/k8s/rbac.generated.yaml "$src"/k8s/extensions-rbac.generated.yaml "$tmp/rbac/"
        chmod -R u+w "$tmp"
        [[ -x $tmp/bin/agent-sandbox-controller ]] || die "go install left no controller binary"
        rm -rf "$CACHE"
        mv "$tmp" "$CACHE"
        trap - EXIT
        log "built in $((SECONDS - start))s"
    fi
fi
echo "$CACHE"
