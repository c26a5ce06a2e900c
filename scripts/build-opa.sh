#!/usr/bin/env bash
# Builds OPA (pinned) from the Go module proxy into ~/.cache/sandgate/opa/<version>, once,
# and prints the binary's path. Used by opa-test.sh, bench-vs-opa.sh and tests/opa_diff.rs.
set -euo pipefail
OPA_VERSION=${OPA_VERSION:-v1.22.4}
BIN=${SANDGATE_OPA_CACHE:-$HOME/.cache/sandgate/opa/$OPA_VERSION}/bin
if [[ ! -x "$BIN/opa" ]]; then
    command -v go >/dev/null || { echo "build-opa: Go is needed to build OPA" >&2; exit 2; }
    echo "opa: building $OPA_VERSION (a few minutes, once)..." >&2
    mkdir -p "$BIN"
    GOBIN="$BIN" GOFLAGS=-mod=mod GOTOOLCHAIN=local nice -n 10 \
        go install "github.com/open-policy-agent/opa@$OPA_VERSION"
fi
echo "$BIN/opa"
