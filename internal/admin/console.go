package admin

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"strings"

	"github.com/gin-gonic/gin"
)

// serveConsole serves the console's files: the pages at / and /login and
// the assets under /static/. The pages themselves are public (they hold no
// data); everything they show comes from the guarded JSON API.
//
// Assets are read once: each gets an ETag (so a reload costs a 304, not
// ECharts' 1.1 MB again) and, when it is text, a gzip copy (ECharts goes
// from 1.1 MB to about 370 KB). The pages name the assets they load with
// ?v=<content hash>; such a request is cached for a year, since a new build
// changes the name. Anything else (the modules app.js imports) is
// revalidated on every load.
func serveConsole(e *gin.Engine, files fs.FS) {
	assets := loadAssets(files)
	page := func(name string) gin.HandlerFunc {
		return func(c *gin.Context) {
			b, err := fs.ReadFile(files, name)
			if err != nil {
				b, err = fs.ReadFile(files, "index.html")
			}
			if err != nil {
				c.String(http.StatusNotFound, "console not built")
				return
			}
			c.Header("Cache-Control", "no-cache")
			c.Header("X-Frame-Options", "DENY")
			c.Header("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'")
			c.Data(http.StatusOK, "text/html; charset=utf-8", versioned(b, assets))
		}
	}
	e.GET("/", page("index.html"))
	e.GET("/login", page("login.html"))
	e.GET("/static/*path", func(c *gin.Context) {
		a, ok := assets[path.Clean("/static" + c.Param("path"))[1:]]
		if !ok || strings.HasSuffix(c.Param("path"), "/") {
			c.Status(http.StatusNotFound) // no directory listings
			return
		}
		a.serve(c)
	})
}

// asset is one file under static/, ready to serve.
type asset struct {
	body, gz []byte // gz: nil when compressing does not pay
	etag     string // quoted, from the content hash
	version  string // the ?v= the pages use
	ctype    string
}

// loadAssets reads every file under static/ (keyed "static/...").
func loadAssets(files fs.FS) map[string]*asset {
	out := map[string]*asset{}
	_ = fs.WalkDir(files, "static", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		b, err := fs.ReadFile(files, p)
		if err != nil {
			return nil
		}
		sum := sha256.Sum256(b)
		v := hex.EncodeToString(sum[:8])
		a := &asset{body: b, etag: `"` + v + `"`, version: v, ctype: mime.TypeByExtension(path.Ext(p))}
		if a.ctype == "" {
			a.ctype = http.DetectContentType(b)
		}
		if isText(a.ctype) && len(b) > 1024 {
			var z bytes.Buffer
			w, _ := gzip.NewWriterLevel(&z, gzip.BestCompression)
			w.Write(b)
			w.Close()
			if z.Len() < len(b)*9/10 {
				a.gz = z.Bytes()
			}
		}
		out[p] = a
		return nil
	})
	return out
}

func isText(ctype string) bool {
	return strings.HasPrefix(ctype, "text/") || strings.Contains(ctype, "javascript") ||
		strings.Contains(ctype, "json") || strings.Contains(ctype, "svg")
}

func (a *asset) serve(c *gin.Context) {
	h := c.Writer.Header()
	h.Set("ETag", a.etag)
	h.Set("Vary", "Accept-Encoding")
	h.Set("X-Content-Type-Options", "nosniff")
	if c.Query("v") == a.version {
		h.Set("Cache-Control", "public, max-age=31536000, immutable")
	} else {
		h.Set("Cache-Control", "no-cache")
	}
	if etagMatch(c.GetHeader("If-None-Match"), a.etag) {
		c.Status(http.StatusNotModified)
		return
	}
	body := a.body
	if a.gz != nil && acceptsGzip(c.GetHeader("Accept-Encoding")) {
		h.Set("Content-Encoding", "gzip")
		body = a.gz
	}
	c.Data(http.StatusOK, a.ctype, body)
}

func etagMatch(header, etag string) bool {
	for _, t := range strings.Split(header, ",") {
		t = strings.TrimPrefix(strings.TrimSpace(t), "W/")
		if t == etag || t == "*" {
			return true
		}
	}
	return false
}

func acceptsGzip(header string) bool {
	for _, t := range strings.Split(header, ",") {
		name, q, _ := strings.Cut(strings.TrimSpace(t), ";")
		if strings.EqualFold(strings.TrimSpace(name), "gzip") && strings.ReplaceAll(strings.TrimSpace(q), " ", "") != "q=0" {
			return true
		}
	}
	return false
}

// versioned names, in a page, each asset it loads by its content hash:
// src="/static/app.js" → src="/static/app.js?v=…".
func versioned(page []byte, assets map[string]*asset) []byte {
	for p, a := range assets {
		page = bytes.ReplaceAll(page, []byte(`"/`+p+`"`), []byte(`"/`+p+`?v=`+a.version+`"`))
	}
	return page
}
