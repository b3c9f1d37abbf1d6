#!/usr/bin/env bash
# Runs every Go fuzz target for N seconds each (default 20), one after
# another:
#   scripts/fuzz.sh [seconds]
# Fails if any target finds a failing input; go test then writes it to the
# package's testdata/fuzz/<FuzzName>/ (minimized for at most 10 s) and prints
# how to re-run it. The seed corpora in testdata/fuzz also run as ordinary
# tests under `go test`. SORAKAQ_FUZZ_STRICT=1 turns off the allowances the
# targets make for known, reported defects (see the fuzz_test.go files).
set -euo pipefail
cd "$(dirname "$0")/.."

secs="${1:-20}"
if ! [[ "$secs" =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: $0 [seconds per target, a positive integer]" >&2
  exit 2
fi

# package  target
targets=(
  "./internal/message/ FuzzParseSubmit"
  "./internal/message/ FuzzDecodeStrict"
  "./pkg/timingwheel/ FuzzWheelOps"
)

failed=()
for t in "${targets[@]}"; do
  read -r pkg name <<<"$t"
  echo "== $name ($pkg, ${secs}s)"
  if ! go test -run '^$' -fuzz "^${name}\$" -fuzztime "${secs}s" -fuzzminimizetime 10s "$pkg"; then
    failed+=("$name")
  fi
done

if [ "${#failed[@]}" -gt 0 ]; then
  echo "== fuzzing found failures in: ${failed[*]}" >&2
  exit 1
fi
echo "== fuzzing found nothing"
