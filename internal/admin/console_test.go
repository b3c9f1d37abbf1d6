package admin

import (
	"bytes"
	"compress/gzip"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/gin-gonic/gin"
)

func consoleFixture() *gin.Engine {
	gin.SetMode(gin.TestMode)
	e := gin.New()
	serveConsole(e, fstest.MapFS{
		"index.html":              {Data: []byte(`<script src="/static/vendor/big.js" defer></script><link href="/static/app.css">`)},
		"static/vendor/big.js":    {Data: bytes.Repeat([]byte("var echarts = 1;\n"), 4000)},
		"static/app.css":          {Data: []byte("body{}")},
		"static/pages/monitor.js": {Data: []byte("export {}")},
	})
	return e
}

func do(e *gin.Engine, url string, hdr ...string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(http.MethodGet, url, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		r.Header.Set(hdr[i], hdr[i+1])
	}
	w := httptest.NewRecorder()
	e.ServeHTTP(w, r)
	return w
}

func TestConsoleAssetsCompressedWithETagAndVersionedNames(t *testing.T) {
	e := consoleFixture()
	page := do(e, "/").Body.String()
	m := regexp.MustCompile(`"/static/vendor/big\.js\?v=([0-9a-f]{16})"`).FindStringSubmatch(page)
	if m == nil || !strings.Contains(page, `"/static/app.css?v=`) {
		t.Fatalf("the page does not name its assets by version: %s", page)
	}

	w := do(e, "/static/vendor/big.js?v="+m[1], "Accept-Encoding", "gzip, deflate, br")
	if w.Code != 200 || w.Header().Get("Content-Encoding") != "gzip" || w.Header().Get("Vary") != "Accept-Encoding" {
		t.Fatalf("versioned asset: %d %v", w.Code, w.Header())
	}
	if cc := w.Header().Get("Cache-Control"); !strings.Contains(cc, "immutable") {
		t.Errorf("versioned asset Cache-Control %q, want a long immutable cache", cc)
	}
	zr, err := gzip.NewReader(w.Body)
	if err != nil {
		t.Fatal(err)
	}
	plain, _ := io.ReadAll(zr)
	if len(plain) != 4000*17 || w.Body.Len() > len(plain)/10 {
		t.Errorf("gzip: %d bytes for %d", w.Body.Len(), len(plain))
	}
	etag := w.Header().Get("ETag")

	// Without gzip, the plain file; without ?v= (or a stale one),
	// revalidated on each use, and a 304 when unchanged.
	w = do(e, "/static/vendor/big.js?v=stale")
	if w.Header().Get("Content-Encoding") != "" || w.Body.Len() != 4000*17 || w.Header().Get("Cache-Control") != "no-cache" {
		t.Errorf("plain asset: %v, %d bytes", w.Header(), w.Body.Len())
	}
	if w := do(e, "/static/vendor/big.js", "If-None-Match", etag); w.Code != http.StatusNotModified || w.Body.Len() != 0 {
		t.Errorf("If-None-Match %s: %d", etag, w.Code)
	}
	if w := do(e, "/static/pages/monitor.js", "Accept-Encoding", "gzip"); w.Code != 200 || w.Header().Get("Content-Encoding") != "" ||
		!strings.HasPrefix(w.Header().Get("Content-Type"), "text/javascript") {
		t.Errorf("small module: %d %v", w.Code, w.Header())
	}
	for _, p := range []string{"/static/", "/static/pages/", "/static/../index.html", "/static/nope.js"} {
		if w := do(e, p); w.Code != http.StatusNotFound {
			t.Errorf("GET %s: %d, want 404", p, w.Code)
		}
	}
}
