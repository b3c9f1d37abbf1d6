package admin

import (
	"io/fs"
	"net/http"
	"strings"

	"github.com/gin-gonic/gin"
)

// serveConsole serves the console's files: the pages at / and /login and
// the assets under /static/. The pages themselves are public (they hold no
// data); everything they show comes from the guarded JSON API.
func serveConsole(e *gin.Engine, files fs.FS) {
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
			c.Data(http.StatusOK, "text/html; charset=utf-8", b)
		}
	}
	e.GET("/", page("index.html"))
	e.GET("/login", page("login.html"))
	static := http.FileServer(http.FS(files))
	e.GET("/static/*path", func(c *gin.Context) {
		p := c.Param("path")
		if strings.Contains(p, "..") || strings.HasSuffix(p, "/") {
			c.Status(http.StatusNotFound) // no directory listings
			return
		}
		c.Header("Cache-Control", "public, max-age=300")
		static.ServeHTTP(c.Writer, c.Request)
	})
}
