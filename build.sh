#!/usr/bin/env bash
# Builds bin/sorakaq (and the load tool bin/sorakaq-load) with the version
# stamped in. Usage: ./build.sh
set -euo pipefail
cd "$(dirname "$0")"
version=$(git describe --tags --always --dirty 2>/dev/null || echo dev)
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
ldflags="-s -w -X github.com/sorakaq/sorakaq/internal/version.Version=${version} -X github.com/sorakaq/sorakaq/internal/version.Commit=${commit}"
mkdir -p bin
go build -trimpath -ldflags "$ldflags" -o bin/sorakaq ./cmd/sorakaq
if [ -d cmd/sorakaq-load ]; then
  go build -trimpath -o bin/sorakaq-load ./cmd/sorakaq-load
fi
echo "built bin/sorakaq ($version)"
