#!/usr/bin/env bash
# The whole test suite: installs what the tests need, then vet, gofmt,
# go test -race over every package (unit + end-to-end against the real
# binary), and short benchmark smoke runs. Used by `make test` and CI.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== go $(go version | awk '{print $3}')"
go mod download

echo "== vet and gofmt"
go vet ./...
unformatted=$(gofmt -l $(git ls-files '*.go'))
if [ -n "$unformatted" ]; then echo "gofmt would change: $unformatted"; exit 1; fi

echo "== tests (race detector)"
go test -race -count=1 -timeout 20m ./...

echo "== benchmarks compile and run once"
go test -run '^$' -bench . -benchtime 1x ./pkg/... >/dev/null
echo "== all tests passed"
