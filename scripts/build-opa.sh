#!/usr/bin/env bash
# Builds OPA (pinned) from the Go module proxy into ~/.cache/sandgate/opa/<version>, once,
# and prints the binary's path. Used by opa-test.sh, bench-vs-opa.sh and tests/opa_diff.rs.
# Locked (parallel tests wait for one build) and built into a temporary directory renamed
# into place, so an interrupted build leaves nothing; one Go build at a time on the
# machine (lib/go-serial.sh).
set -euo pipefail
OPA_VERSION=${OPA_VERSION:-v1.22.4}
CACHE=${SANDGATE_OPA_CACHE:-$HOME/.cache/sandgate/opa/$OPA_VERSION}
BIN=$CACHE/bin
if [[ ! -x "$BIN/opa" ]]; then
    command -v go >/dev/null || { echo "build-opa: Go is needed to build OPA" >&2; exit 2; }
    mkdir -p "$CACHE"
    exec 9>"$CACHE/.lock"
    flock -n 9 || { echo "opa: another build holds $CACHE/.lock; waiting for it" >&2; flock 9; }
    if [[ ! -x "$BIN/opa" ]]; then
        # shellcheck source=lib/go-serial.sh
        . "$(dirname "${BASH_SOURCE[0]}")/lib/go-serial.sh"
        tmp=$CACHE/bin.tmp.$$
        rm -rf "$tmp"
        trap 'rm -rf "$tmp"' EXIT
        start=$SECONDS
        echo "opa: building $OPA_VERSION (a few minutes, once)..." >&2
        GOBIN="$tmp" GOFLAGS="-mod=mod -buildvcs=false" GOTOOLCHAIN=local CGO_ENABLED=0 \
            go_serial opa nice -n 10 go install -trimpath -ldflags "-s -w" \
            "github.com/open-policy-agent/opa@$OPA_VERSION" ||
            { echo "opa: go install failed" >&2; exit 2; }
        rm -rf "$BIN"
        mv "$tmp" "$BIN"
        trap - EXIT
        echo "opa: built in $((SECONDS - start))s" >&2
    fi
fi
echo "$BIN/opa"
