# make build   bin/sorakaq
# make run     the all-in-one in the foreground (defaults: 127.0.0.1:9088 API, 127.0.0.1:9087 admin, data in ./data)
# make test    the whole suite, installing what it needs (same as .ci/run)
# make check   vet + gofmt + unit tests, quick
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
	go test -race ./...

bench:
	./scripts/bench.sh

clean:
	rm -rf bin logs
