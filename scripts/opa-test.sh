#!/usr/bin/env bash
# Runs the shipped policies' tests with OPA itself, to keep them portable: the same
# files must pass `sandgate policy test` (regorus) and `opa test` (OPA).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OPA=$("$ROOT/scripts/build-opa.sh")
exec "$OPA" test "$ROOT/policies" "$@"
