#!/usr/bin/env bash
# Reproduces the original sorakaQ's published submit table: the same
# `ab -k -c C -n N -p data.txt` pairs against /sorakaq/msg/submit, printing
# ab's mean time per request (ms) for each pair, as the original did.
#   scripts/ab-table.sh [base-url]       (default http://127.0.0.1:9088)
# The body is the original's data.txt except the callback URL, which points
# at a closed local port instead of a public site (this machine is offline;
# nothing fires during the run: the delay is 10 s).
set -euo pipefail
base=${1:-http://127.0.0.1:9088}
command -v ab >/dev/null || { echo "ab not found: apt-get install -y apache2-utils" >&2; exit 1; }
body=$(mktemp)
trap 'rm -f "$body"' EXIT
printf '%s' '{"topic_name":"delay_test", "delay_time":10000,"ttr":1000,"callback":{"request_type":"POST","url":"http://127.0.0.1:9/cb","params":"{\"id\":111}"}}' >"$body"
pairs="10/100 50/100 100/100 100/500 100/1000 500/1000 1000/1000"
ulimit -n 65536 2>/dev/null || true
# warm up (connections, topic creation)
ab -q -k -c 10 -n 200 -p "$body" -T application/json "$base/sorakaq/msg/submit" >/dev/null 2>&1 || true
printf '| concurrency/requests |'; for p in $pairs; do printf ' %s |' "$p"; done; echo
printf '|---|'; for p in $pairs; do printf -- '---|'; done; echo
printf '| mean time per request (ms) |'
for p in $pairs; do
  c=${p%/*}; n=${p#*/}
  out=$(ab -q -k -c "$c" -n "$n" -p "$body" -T application/json "$base/sorakaq/msg/submit" 2>&1)
  if echo "$out" | grep -q "Non-2xx responses"; then echo "non-2xx answers for $p" >&2; fi
  ms=$(echo "$out" | awk '/Time per request:.*\(mean\)$/ {print $4; exit}')
  printf ' %s |' "${ms:-n/a}"
done
echo
