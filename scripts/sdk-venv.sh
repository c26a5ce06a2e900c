#!/usr/bin/env bash
# A virtualenv with the Python SDK's dependencies (runtime and test: kubernetes,
# langchain-core, pytest, ruff, mypy at the pins in sdk/python/pyproject.toml), cached in
# ~/.cache/sandgate/sdk-venv-<hash of pyproject.toml>, then the SDK itself installed
# into it from this checkout with `pip install` (not editable: what a user gets).
# Prints the venv's directory.
#
#   scripts/sdk-venv.sh
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SDK=$ROOT/sdk/python
hash=$(sha256sum "$SDK/pyproject.toml" | cut -c1-12)
VENV=$HOME/.cache/sandgate/sdk-venv-$hash
log() { printf 'sdk venv: %s\n' "$*" >&2; }
mkdir -p "$HOME/.cache/sandgate"
exec 9>"$HOME/.cache/sandgate/.sdk-venv.lock"
flock 9
if [[ ! -x $VENV/bin/pytest ]]; then
    log "creating $VENV"
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check "setuptools>=68" >&2
    # The test extra's pins, read from pyproject.toml (Python 3.11's tomllib).
    mapfile -t deps < <("$VENV/bin/python" - "$SDK/pyproject.toml" <<'PY'
import sys, tomllib
p = tomllib.load(open(sys.argv[1], "rb"))["project"]
for d in p["dependencies"] + p["optional-dependencies"]["test"]:
    print(d)
PY
)
    "$VENV/bin/pip" install -q --disable-pip-version-check "${deps[@]}" >&2
fi
# From a copy: building leaves build/ and *.egg-info behind.
copy=$(mktemp -d)
trap 'rm -rf "$copy"' EXIT
cp -r "$SDK" "$copy/sdk"
rm -rf "$copy/sdk/build" "$copy"/sdk/src/*.egg-info
"$VENV/bin/pip" install -q --disable-pip-version-check --no-deps --no-build-isolation \
    --force-reinstall "$copy/sdk" >&2
printf '%s\n' "$VENV"
