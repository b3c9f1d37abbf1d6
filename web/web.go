// Package web is the operators' console of sorakaQ: plain HTML, CSS and
// JavaScript modules from src/, copied into dist/ by build.mjs (with
// Apache ECharts from node_modules) and embedded here, so that `go build`
// alone gives a working console. dist/ is committed; check-dist.sh checks
// that it is what `npm ci && node build.mjs` makes.
//
// The admin service serves Assets() at the root:
//
//	GET /            index.html
//	GET /login       index.html (the page shows the login form on /login)
//	GET /static/...  the files under dist/static/
package web

import (
	"embed"
	"io/fs"
)

// FS holds dist/ as built by build.mjs.
//
//go:embed dist
var FS embed.FS

// Assets is the built console with dist/ as its root: index.html and
// static/... .
func Assets() fs.FS {
	sub, err := fs.Sub(FS, "dist")
	if err != nil {
		panic("web: " + err.Error()) // cannot happen: dist is embedded
	}
	return sub
}
