#!/usr/bin/env bash
# Builds Prometheus's promtool (pinned) from the Go module proxy into
# ~/.cache/sandgate/promtool/<version>, once, and prints the binary's path. Used by
# tests/monitoring.rs to check deploy/monitoring's alert rules and dashboard queries.
set -euo pipefail
# The Go module version of Prometheus 3.x's repository (github.com/prometheus/prometheus).
PROMTOOL_VERSION=${PROMTOOL_VERSION:-v0.316.0}
BIN=${SANDGATE_PROMTOOL_CACHE:-$HOME/.cache/sandgate/promtool/$PROMTOOL_VERSION}/bin
if [[ ! -x "$BIN/promtool" ]]; then
    command -v go >/dev/null || { echo "build-promtool: Go is needed to build promtool" >&2; exit 2; }
    echo "promtool: building $PROMTOOL_VERSION (about 10 minutes on 2 cores, once)..." >&2
    mkdir -p "$BIN"
    GOBIN="$BIN" GOFLAGS=-mod=mod GOTOOLCHAIN=local nice -n 10 \
        go install -trimpath -ldflags="-s -w" \
        "github.com/prometheus/prometheus/cmd/promtool@$PROMTOOL_VERSION"
fi
echo "$BIN/promtool"
