package httpapi

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"
	"go.uber.org/zap"
)

// Options are what every listener sorakaQ owns enforces on its clients
// (config http.*). Without them a client that sends its body one byte at
// a time holds a connection and a goroutine for as long as it likes, and
// gin believes any X-Forwarded-For, so a client chooses the address the
// rate limits and the login back-off see.
type Options struct {
	// ReadHeaderTimeout bounds the time to send the request headers.
	ReadHeaderTimeout time.Duration
	// ReadTimeout bounds the time to send the whole request, body
	// included (HTTP/1 and each HTTP/2 stream).
	ReadTimeout time.Duration
	// IdleTimeout closes a keep-alive connection idle this long.
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds the request line and headers (Go's default is
	// 1 MiB; net/http allows 4 KiB more than this).
	MaxHeaderBytes int
	// TrustedProxies are the peers (IPs or CIDRs) whose X-Forwarded-For
	// and X-Real-IP are believed; empty: none, the client is the peer.
	TrustedProxies []string
	// MetricsToken, when set, is required as "Authorization: Bearer
	// <token>" on /metrics (its figures name topics and workers).
	MetricsToken string
	// AllowedHosts are the names a request's Host may give besides those
	// always accepted (IP addresses, localhost, *.localhost, this
	// machine's host name): "name", ".domain" (it and its subdomains) or
	// "*" (any). Others are refused with 403 (DNS rebinding).
	AllowedHosts []string
	// TrustedOrigins are origins ("https://console.example.com") whose
	// cross-origin browser requests are let through.
	TrustedOrigins []string
	// Log gets a warning (at most every 10 s) for refused hosts and
	// origins; nil: none.
	Log *zap.Logger
}

// DefaultOptions are the defaults applied to zero fields, and
// config.Default's http.* defaults. There is no write timeout:
// handlers are bounded by their own timeouts (a submit by the store's),
// and the profiler's 30 s profile must be able to finish.
func DefaultOptions() Options {
	return Options{ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second, IdleTimeout: 120 * time.Second, MaxHeaderBytes: 64 << 10}
}

// withDefaults fills zero fields, so a caller that built Options by hand
// never gets a listener without timeouts.
func (o Options) withDefaults() Options {
	d := DefaultOptions()
	if o.ReadHeaderTimeout <= 0 {
		o.ReadHeaderTimeout = d.ReadHeaderTimeout
	}
	if o.ReadTimeout <= 0 {
		o.ReadTimeout = d.ReadTimeout
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = d.IdleTimeout
	}
	if o.MaxHeaderBytes <= 0 {
		o.MaxHeaderBytes = d.MaxHeaderBytes
	}
	return o
}

// Server is one HTTP listener of a service. The socket is opened by
// Listen (so its owner can bind 127.0.0.1:0 and read Addr before
// serving); it serves HTTPS when a certificate is given.
type Server struct {
	name      string
	ln        net.Listener
	srv       *http.Server
	cert, key string
}

// Listen opens addr for e with the limits of o; cert and key (PEM files)
// turn on TLS. It sets e's trusted proxies from o (none when empty).
func Listen(name, addr string, e *gin.Engine, o Options, cert, key string) (*Server, error) {
	o = o.withDefaults()
	if err := e.SetTrustedProxies(o.TrustedProxies); err != nil {
		return nil, fmt.Errorf("%s: http.trusted_proxies: %w", name, err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%s: listen %s: %w", name, addr, err)
	}
	var h http.Handler = e
	if o.MetricsToken != "" {
		h = metricsToken(o.MetricsToken, e)
	}
	h, err = browserGuard(o, o.Log, h)
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return &Server{name: name, ln: ln, cert: cert, key: key,
		srv: &http.Server{Handler: h, ReadHeaderTimeout: o.ReadHeaderTimeout, ReadTimeout: o.ReadTimeout,
			IdleTimeout: o.IdleTimeout, MaxHeaderBytes: o.MaxHeaderBytes}}, nil
}

// Addr is the bound address.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Serve serves until Shutdown; a clean shutdown returns nil.
func (s *Server) Serve() error {
	var err error
	if s.cert != "" {
		err = s.srv.ServeTLS(s.ln, s.cert, s.key)
	} else {
		err = s.srv.Serve(s.ln)
	}
	if err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("%s: serve: %w", s.name, err)
	}
	return nil
}

// Shutdown stops accepting and waits for the requests in progress.
func (s *Server) Shutdown(ctx context.Context) error { return s.srv.Shutdown(ctx) }

// Close closes the socket of a server that never served (Shutdown closes
// it otherwise); after Shutdown it does nothing.
func (s *Server) Close() error {
	if err := s.ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("%s: close: %w", s.name, err)
	}
	return nil
}

// metricsToken answers /metrics only with the bearer token.
func metricsToken(token string, next http.Handler) http.Handler {
	want := []byte("Bearer " + token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/metrics" && subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), want) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="metrics"`)
			w.Header().Set("Content-Type", "application/json; charset=utf-8")
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write([]byte(`{"ec":401,"em":"unauthorized: /metrics needs Authorization: Bearer <http.metrics_token>","result":null}`))
			return
		}
		next.ServeHTTP(w, r)
	})
}
