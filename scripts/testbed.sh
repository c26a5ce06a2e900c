#!/usr/bin/env bash
# Brings a test bed up by hand: a control plane, sandgate, a real gVisor node and the
# article's template (examples/testbed.rs), in the foreground until Enter or Ctrl-C,
# which takes it all down. Needs root and the real node's packages (see the README).
#
#   scripts/testbed.sh          up (prints the KUBECONFIG to use)
#   scripts/testbed.sh down     take down a test bed whose process was killed -9
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ ${1:-} == down ]]; then
    if [[ -f /run/sandgate-node.dir ]]; then
        dir=$(cat /run/sandgate-node.dir)
        bash tests/realnode/teardown.sh "$dir" sgnode0
        for f in "$dir"/pids/*.pid; do [[ -f $f ]] && kill "$(cat "$f")" 2>/dev/null; done
        rm -rf "$dir"
        echo "testbed: down"
    else
        echo "testbed: no test bed recorded in /run/sandgate-node.dir"
    fi
    exit 0
fi
cargo build --quiet --bin sandgate --example testbed
exec "${CARGO_TARGET_DIR:-target}/debug/examples/testbed"
