#!/usr/bin/env bash
# The whole test suite: installs what the tests need (Debian's redis-server
# and zookeeper, Kafka's jars from Maven Central: scripts/infra.sh), starts
# real Redis, ZooKeeper and Kafka on loopback test ports, then vet, gofmt,
# go test -race over every package (unit, end-to-end against the real
# binary, integration against the real servers), and short benchmark smoke
# runs. Used by `make test` and CI. Servers it started are stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== go $(go version | awk '{print $3}')"
go mod download

echo "== real Redis, ZooKeeper and Kafka (scripts/infra.sh)"
# Stop at the end only the servers this run started (a developer's stay up):
# probe the ports rather than trust a status line.
started_infra=0
for port in "${SORAKAQ_REDIS_PORT:-16379}" "${SORAKAQ_ZK_PORT:-12181}" "${SORAKAQ_KAFKA_PORT:-19092}"; do
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || started_infra=1
done
scripts/infra.sh up
if [ "$started_infra" = 1 ]; then trap 'scripts/infra.sh down >/dev/null 2>&1 || true' EXIT; fi
eval "$(scripts/infra.sh env)"
export SORAKAQ_TEST_REDIS SORAKAQ_TEST_ZK SORAKAQ_TEST_KAFKA

echo "== browser for the console tests (Debian's chromium)"
if [ ! -x /usr/bin/chromium ]; then
  (apt-get install -y -q chromium >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; }) \
    || echo "warning: could not install chromium; the browser tests will be skipped"
fi

echo "== console assets: the vendored ECharts is the pinned one"
sh web/check-vendor.sh

echo "== vet and gofmt"
go vet ./...
unformatted=$(gofmt -l $(git ls-files '*.go'))
if [ -n "$unformatted" ]; then echo "gofmt would change: $unformatted"; exit 1; fi

echo "== unit and package tests (race detector)"
go test -race -count=1 -timeout 15m $(go list ./... | grep -v /test/)

echo "== end-to-end, browser and integration tests against real processes (race detector, one package at a time)"
go test -race -count=1 -p 1 -timeout 20m ./test/...

echo "== fuzzing, short (scripts/fuzz.sh; seeds also ran as tests above)"
scripts/fuzz.sh 10

echo "== contract fuzzing of the HTTP API against docs/openapi.yaml (schemathesis, short)"
scripts/contract.sh 30

echo "== benchmarks compile and run once"
go test -run '^$' -bench . -benchtime 1x ./pkg/... >/dev/null
echo "== all tests passed"
