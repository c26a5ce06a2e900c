#!/usr/bin/env bash
# Builds (or reuses) every tool the test suite uses, ahead of the tests: .ci/run starts it
# in the background at once, so the Go builds run while cargo downloads, lints and
# compiles. Each build script is cached by its inputs and locked, so a test that needs a
# tool before it is ready waits for this build instead of starting a second one.
#
#   scripts/build-tools.sh go      the Go builds, one after another, in the order the
#                                  tests need them: helm (tests/chart.rs), the control
#                                  plane (tests/e2e), the real node (tests/install,
#                                  tests/realnode), OPA (tests/opa_*), agent-sandbox's
#                                  controller and CRDs (tests/e2e's upstream tests)
#   scripts/build-tools.sh other   what is not compiled: the real node's two images
#                                  (debootstrap: network and disk) and the Python SDK's
#                                  virtualenv (pip); needs the apt packages of .ci/run
#
# Prints each step's time ("tools: helm 301s"); exits non-zero if a step failed (the
# test that needs that tool then runs its script again and fails with its output).
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
S=$ROOT/scripts

case "${1:-}" in
    go) steps=(helm:build-helm.sh controlplane:build-controlplane.sh
               agent-sandbox:build-agent-sandbox.sh node:build-node.sh opa:build-opa.sh) ;;
    other) steps=("node-images:build-node.sh --images" sdk-venv:sdk-venv.sh) ;;
    -h|--help) sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "usage: scripts/build-tools.sh go|other (--help)" >&2; exit 2 ;;
esac

failed=0
for step in "${steps[@]}"; do
    name=${step%%:*}
    read -r -a cmd <<<"${step#*:}"
    start=$SECONDS
    if bash "$S/${cmd[0]}" "${cmd[@]:1}" >/dev/null; then
        printf 'tools: %-14s %5ss\n' "$name" $((SECONDS - start)) >&2
    else
        printf 'tools: %-14s %5ss FAILED\n' "$name" $((SECONDS - start)) >&2
        failed=1
    fi
done
exit "$failed"
