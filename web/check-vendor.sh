#!/bin/sh
# check-vendor.sh: re-vendor ECharts into a temporary directory and compare
# with the committed src/static/vendor/. Run from anywhere; needs node and npm.
#   sh web/check-vendor.sh            (runs `npm ci` first if node_modules is missing)
set -eu
cd "$(dirname "$0")"
# build.mjs refuses a node_modules whose echarts is not the pinned version.
if [ ! -f node_modules/echarts/package.json ]; then
	npm ci --ignore-scripts --no-audit --no-fund
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
node build.mjs "$tmp/vendor" >/dev/null
if diff -r src/static/vendor "$tmp/vendor"; then
	echo "check-vendor: web/src/static/vendor is the pinned ECharts"
else
	echo "check-vendor: web/src/static/vendor differs from the pinned ECharts; run: cd web && npm ci && node build.mjs" >&2
	exit 1
fi
