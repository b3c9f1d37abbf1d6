// Package web is the operators' console of sorakaQ: plain HTML, CSS and
// JavaScript modules in src/, embedded as they are, so that `go build`
// alone gives a working console. The one file not written by hand is
// Apache ECharts, vendored from npm into src/static/vendor/ by build.mjs
// (pinned in package-lock.json; check-vendor.sh checks the copy).
//
// The admin service serves Assets() at the root:
//
//	GET /            index.html
//	GET /login       index.html (the page shows the login form on /login)
//	GET /static/...  the files under src/static/
package web

import (
	"embed"
	"io/fs"
)

// FS holds src/.
//
//go:embed src
var FS embed.FS

// Assets is the console with src/ as its root: index.html and static/... .
func Assets() fs.FS {
	sub, err := fs.Sub(FS, "src")
	if err != nil {
		panic("web: " + err.Error()) // cannot happen: src is embedded
	}
	return sub
}
