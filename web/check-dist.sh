#!/bin/sh
# check-dist.sh: rebuild the console into a temporary directory and compare
# it with the committed dist/. Run from anywhere; needs node and npm.
#   sh web/check-dist.sh            (runs `npm ci` first if node_modules is missing)
set -eu
cd "$(dirname "$0")"
# build.mjs refuses a node_modules whose echarts is not the pinned version.
if [ ! -f node_modules/echarts/package.json ]; then
	npm ci --ignore-scripts --no-audit --no-fund
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
node build.mjs "$tmp/dist" >/dev/null
if diff -r dist "$tmp/dist"; then
	echo "check-dist: web/dist is up to date"
else
	echo "check-dist: web/dist differs from a fresh build; run: cd web && npm ci && node build.mjs" >&2
	exit 1
fi
