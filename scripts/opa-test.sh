#!/usr/bin/env bash
# Runs the shipped policies' tests with OPA itself, to keep them portable: the same
# files must pass `sandgate policy test` (regorus) and `opa test` (OPA).
# OPA is built once from the Go module proxy into ~/.cache/sandgate/opa/<version>.
set -euo pipefail
OPA_VERSION=${OPA_VERSION:-v1.22.4}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${SANDGATE_OPA_CACHE:-$HOME/.cache/sandgate/opa/$OPA_VERSION}/bin
if [[ ! -x "$BIN/opa" ]]; then
    echo "opa: building $OPA_VERSION (a few minutes, once)..." >&2
    mkdir -p "$BIN"
    GOBIN="$BIN" GOFLAGS=-mod=mod GOTOOLCHAIN=local nice -n 10 \
        go install "github.com/open-policy-agent/opa@$OPA_VERSION"
fi
exec "$BIN/opa" test "$ROOT/policies" "$@"
