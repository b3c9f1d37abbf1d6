#!/usr/bin/env bash
# The whole test suite: installs what the tests need (Debian's redis-server
# and zookeeper, Kafka's jars from Maven Central: scripts/infra.sh), starts
# real Redis, ZooKeeper and Kafka on loopback test ports, then vet, gofmt,
# staticcheck, go test -race over every package (unit, end-to-end against the real
# binary, integration against the real servers), and short benchmark smoke
# runs. Used by `make test` and CI. Servers it started are stopped at the end,
# and the run fails if any process it started is still running: it runs
# under scripts/runguard, which lists, stops and fails on what is left.
#
# Nothing may skip: a test whose real component (a server, chromium,
# openssl) is missing fails here (SORAKAQ_REQUIRE_ALL=1, internal/testenv),
# and every go test run goes through scripts/testgate, which fails on any
# skipped test. What this script cannot install stops it, with the reason.
set -euo pipefail
self=$(cd "$(dirname "$0")" && pwd)/$(basename "$0")
cd "$(dirname "$0")/.."
if [ -z "${SKQ_GUARDED_TEST:-}" ]; then
  SKQ_GUARDED_TEST=1 exec go run ./scripts/runguard -- "$self" "$@"
fi
export SORAKAQ_REQUIRE_ALL=1
die() { echo "test.sh: STOP: $*" >&2; exit 1; }

echo "== go $(go version | awk '{print $3}')"
go mod download

echo "== the checks that guard this run can fail (scripts/runguard: a process left running; scripts/testgate: a skipped test)"
go test -count=1 ./scripts/runguard ./scripts/testgate >/dev/null
tools=$(mktemp -d)
go build -o "$tools/testgate" ./scripts/testgate
# gotest ARGS...: go test -json through the gate (fails on a failure or a skip).
# The broker outage test stops and restarts Kafka, so it runs only against a
# private broker (internal/bus/kafka/outage_test.go): its skip is allowed,
# and listed.
gotest() {
  go test -json "$@" | "$tools/testgate" -allow '^github.com/sorakaq/sorakaq/internal/bus/kafka/TestBrokerOutageRecovery$'
}

echo "== real Redis, ZooKeeper and Kafka (scripts/infra.sh)"
# Stop at the end only the servers this run started (a developer's stay up):
# probe the ports rather than trust a status line.
started_infra=0
for port in "${SORAKAQ_REDIS_PORT:-16379}" "${SORAKAQ_ZK_PORT:-12181}" "${SORAKAQ_KAFKA_PORT:-19092}"; do
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || started_infra=1
done
# The trap is set before `up`, so servers a failed `up` started are stopped too.
# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() {
  local rc=$?
  if [ "$started_infra" = 1 ]; then scripts/infra.sh down >/dev/null 2>&1 || { echo "test.sh: infra.sh down failed" >&2; rc=1; }; fi
  rm -rf "$tools"
  exit "$rc"
}
trap cleanup EXIT
scripts/infra.sh up
eval "$(scripts/infra.sh env)"
export SORAKAQ_TEST_REDIS SORAKAQ_TEST_ZK SORAKAQ_TEST_KAFKA

# apt_need PACKAGE: install a Debian package, updating the lists if needed.
apt_need() {
  apt-get install -y -q "$1" >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q "$1" >/dev/null; }
}

echo "== browser for the console tests (Debian's chromium)"
chromium=${SORAKAQ_CHROMIUM:-/usr/bin/chromium}
if [ ! -x "$chromium" ]; then
  [ -z "${SORAKAQ_CHROMIUM:-}" ] || die "SORAKAQ_CHROMIUM=$chromium is not an executable"
  apt_need chromium || die "could not install chromium (apt-get install chromium): the browser tests need it"
  [ -x "$chromium" ] || die "chromium installed, but $chromium is not there"
fi

echo "== openssl for the TLS end-to-end test"
command -v openssl >/dev/null || apt_need openssl || die "could not install openssl (apt-get install openssl): the TLS test makes its certificate with it"
command -v openssl >/dev/null || die "openssl installed, but not on PATH"

echo "== console assets: the vendored ECharts is the pinned one"
sh web/check-vendor.sh

echo "== vet, gofmt and staticcheck"
go vet ./...
unformatted=$(gofmt -l $(git ls-files '*.go'))
if [ -n "$unformatted" ]; then echo "gofmt would change: $unformatted"; exit 1; fi
# staticcheck, pinned, built into the tools dir (the Go module proxy is all
# it needs). internal/registry/zk/internal/gozk is left out: it is upstream
# go-zookeeper's code kept unchanged but for one fix (its README).
GOBIN="$tools" go install honnef.co/go/tools/cmd/staticcheck@v0.8.2 || die "could not build staticcheck (go install honnef.co/go/tools/cmd/staticcheck@v0.8.2)"
# shellcheck disable=SC2046  # one argument per package
"$tools/staticcheck" $(go list ./... | grep -v /internal/registry/zk/internal/gozk)

echo "== unit and package tests (race detector)"
# shellcheck disable=SC2046  # one argument per package
gotest -race -count=1 -timeout 15m $(go list ./... | grep -v /test/)

echo "== end-to-end, browser and integration tests against real processes (race detector, one package at a time)"
gotest -race -count=1 -p 1 -timeout 20m ./test/...

echo "== fuzzing, short (scripts/fuzz.sh; seeds also ran as tests above)"
scripts/fuzz.sh 10

echo "== contract fuzzing of the HTTP API against docs/openapi.yaml (schemathesis, short)"
scripts/contract.sh 30

echo "== benchmarks compile and run once"
go test -run '^$' -bench . -benchtime 1x ./pkg/... >/dev/null
echo "== all tests passed"
