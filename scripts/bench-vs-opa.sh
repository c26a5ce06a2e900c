#!/usr/bin/env bash
# sandgate beside OPA on the same policies, over HTTPS (issue 6). Builds OPA (pinned,
# cached) and sandgate (release), checks that both give the same answers, runs each
# workload at 1, 16 and 64 connections with the two servers in turns, and rewrites the
# comparison section of BENCHMARKS.md and bench/compare.svg.
# Env: SECONDS per run (5), ROUNDS (2), CONNECTIONS (1,16,64), WRITE (1).
# Takes about 3 x 3 x ROUNDS x 2 x SECONDS seconds after the builds (3 min by default).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/sandgate/target}
OPA=$("$ROOT/scripts/build-opa.sh")
export OPA
exec cargo bench --locked --bench compare
