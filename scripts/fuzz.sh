#!/usr/bin/env bash
# Coverage-guided fuzzing (cargo-fuzz / libFuzzer) of the request body → decision path
# and of the policy input conversion, each for a bounded time.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET]      (default 300)
#   scripts/fuzz.sh --runs N                  N executions per target (at most 4 h each)
#
# FUZZ_SANITIZER=none builds without AddressSanitizer (cargo fuzz's default is address):
# several times more executions per second on the large inputs of the corpus, for long
# runs; sandgate's own code is safe Rust, and panics and assertions are caught either way.
#
# Installs cargo-fuzz (pinned) into ~/.cache/sandgate/cargo-fuzz when missing. Uses the
# nightly toolchain when rustup has one, else stable with RUSTC_BOOTSTRAP=1 (libFuzzer's
# instrumentation needs unstable flags). Corpora live in ~/.cache/sandgate/fuzz/<target>
# (seeded from tests/fixtures and policies/*_test.rego inputs); any crash is written to
# fuzz/artifacts/<target>/ and fails the script: add it to tests/fuzz_regressions.rs.
# Prints the executions of each run (libFuzzer's "stat::number_of_executed_units").
set -euo pipefail
cd "$(dirname "$0")/.."
runs=""
if [ "${1:-}" = "--runs" ]; then
  runs="${2:?--runs needs a count}"
  seconds=14400
else
  seconds="${1:-300}"
fi
cache="$HOME/.cache/sandgate"
tools="$cache/cargo-fuzz"
if ! [ -x "$tools/bin/cargo-fuzz" ]; then
  echo "fuzz: installing cargo-fuzz 0.13.2 into $tools" >&2
  cargo install --locked --root "$tools" cargo-fuzz --version 0.13.2 >&2
fi
export PATH="$tools/bin:$PATH"
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  toolchain=(+nightly)
else
  toolchain=()
  export RUSTC_BOOTSTRAP=1
fi
sanitizer="${FUZZ_SANITIZER:-address}"
export CARGO_TARGET_DIR="$cache/fuzz-target-$sanitizer"
for target in admission_body policy_input; do
  corpus="$cache/fuzz/$target"
  mkdir -p "$corpus"
  cp tests/fixtures/*.json "$corpus/" 2>/dev/null || true
  log="$(mktemp)"
  if [ -n "$runs" ]; then
    limit=(-runs="$runs" -max_total_time="$seconds")
    echo "== fuzz $target for $runs executions"
  else
    limit=(-max_total_time="$seconds")
    echo "== fuzz $target for ${seconds}s"
  fi
  # -rss_limit_mb: regorus and the policies stay far below; a leak would not.
  set +e
  cargo "${toolchain[@]}" fuzz run --fuzz-dir fuzz -s "$sanitizer" "$target" "$corpus" -- \
    "${limit[@]}" -rss_limit_mb=2048 -max_len=65536 \
    -print_final_stats=1 >"$log" 2>&1
  status=$?
  set -e
  grep -E "^#[0-9]+.*(pulse|DONE)|ERROR|panicked|SUMMARY|stat::number_of_executed_units" "$log" | tail -20 || true
  runs=$(awk '/stat::number_of_executed_units/ {print $2}' "$log")
  echo "fuzz $target: ${runs:-0} executions, exit $status"
  rm -f "$log"
  [ "$status" -eq 0 ] || exit "$status"
done
