# make build   bin/sorakaq
# make run     the all-in-one in the foreground (defaults: 127.0.0.1:9088 API, 127.0.0.1:9087 admin, data in ./data)
# make test    the whole suite, installing what it needs (same as .ci/run)
# make check   vet + gofmt + staticcheck (if installed) + unit tests, quick
.PHONY: build run test check bench clean

build:
	./build.sh

run: build
	bin/sorakaq all

test:
	./scripts/test.sh

check:
	go vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); exit 1)
	@if command -v staticcheck >/dev/null; then staticcheck $$(go list ./... | grep -v /internal/registry/zk/internal/gozk); else echo "staticcheck not installed (go install honnef.co/go/tools/cmd/staticcheck@v0.8.2); scripts/test.sh runs it"; fi
	go test -race ./...

bench:
	./scripts/bench.sh

clean:
	rm -rf bin logs
