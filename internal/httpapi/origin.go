package httpapi

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// hostPolicy says which Host header values name this server. A DNS
// rebinding page (attacker.example re-resolved to this server's address)
// reaches a listener with its own name as Host and, being same-origin
// with itself, may read the answers; refusing names that are not this
// server's stops it. Always accepted, as in Vite's allowedHosts and
// webpack-dev-server's "auto": IP addresses (a page can only be
// same-origin with an address it was loaded from: this server), localhost
// and *.localhost (browsers resolve them to loopback themselves), this
// machine's host name (the distributed roles advertise it), and the names
// given (sorakaQ's own listen and advertise addresses, http.allowed_hosts).
type hostPolicy struct {
	any      bool
	exact    map[string]bool
	suffixes []string // ".example.com": the domain and its subdomains
}

// NormalizeHost is a Host header's (or a configured name's) host part:
// no port, no brackets, lower case, no trailing dot.
func NormalizeHost(h string) string {
	if host, _, err := net.SplitHostPort(h); err == nil {
		h = host
	} else {
		h = strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")
	}
	return strings.TrimSuffix(strings.ToLower(h), ".")
}

// CheckAllowedHost says what is wrong with an http.allowed_hosts entry.
func CheckAllowedHost(e string) error {
	e = strings.TrimSpace(e)
	if e == "" {
		return fmt.Errorf("is empty")
	}
	if e == "*" {
		return nil
	}
	if strings.ContainsAny(e, "/ @?#") || strings.Contains(e, "://") {
		return fmt.Errorf("must be a host name (sorakaq.example.com, .example.com for a domain and its subdomains, or *), got %q", e)
	}
	return nil
}

func newHostPolicy(allowed []string) *hostPolicy {
	p := &hostPolicy{exact: map[string]bool{}}
	if h, err := os.Hostname(); err == nil && h != "" {
		p.exact[NormalizeHost(h)] = true
	}
	for _, a := range allowed {
		a = strings.TrimSpace(a)
		switch {
		case a == "*":
			p.any = true
		case strings.HasPrefix(a, "."):
			p.suffixes = append(p.suffixes, strings.TrimSuffix(strings.ToLower(a), "."))
		case a != "":
			p.exact[NormalizeHost(a)] = true
		}
	}
	return p
}

func (p *hostPolicy) allows(hostHeader string) bool {
	h := NormalizeHost(hostHeader)
	if h == "" || p.any {
		return true // no Host at all is HTTP/1.0, not a browser
	}
	if _, err := netip.ParseAddr(h); err == nil {
		return true
	}
	if h == "localhost" || strings.HasSuffix(h, ".localhost") || p.exact[h] {
		return true
	}
	for _, s := range p.suffixes {
		if h == s[1:] || strings.HasSuffix(h, s) {
			return true
		}
	}
	return false
}

// unchecked are the paths any Host and origin may ask: probes send
// whatever name their configuration has, and the answers say nothing.
func unchecked(path string) bool { return path == "/healthz" || path == "/readyz" }

// browserGuard refuses, before anything else runs, a request whose Host is
// not a name of this server (DNS rebinding) and a cross-origin browser
// request with an unsafe method (a form another site posts, text/plain
// included): net/http's CrossOriginProtection, which reads Sec-Fetch-Site
// or else compares Origin with Host. Clients that are not browsers send
// neither header and pass; so do GET and HEAD.
func browserGuard(o Options, log *zap.Logger, next http.Handler) (http.Handler, error) {
	hosts := newHostPolicy(o.AllowedHosts)
	cop := http.NewCrossOriginProtection()
	for _, origin := range o.TrustedOrigins {
		if err := cop.AddTrustedOrigin(origin); err != nil {
			return nil, fmt.Errorf("http.trusted_origins: %w", err)
		}
	}
	var lastLog atomic.Int64 // unix ms: a misconfigured client or proxy would flood the log
	warn := func(msg string, fields ...zap.Field) {
		now, last := time.Now().UnixMilli(), lastLog.Load()
		if log != nil && now-last >= 10_000 && lastLog.CompareAndSwap(last, now) {
			log.Warn(msg, fields...)
		}
	}
	cop.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		warn("cross-origin request refused (http.trusted_origins)", zap.String("origin", r.Header.Get("Origin")),
			zap.String("sec_fetch_site", r.Header.Get("Sec-Fetch-Site")), zap.String("host", r.Host), zap.String("path", r.URL.Path), zap.String("peer", r.RemoteAddr))
		writeForbidden(w, "forbidden: cross-origin request refused: a page of another origin sent it (Origin or Sec-Fetch-Site); "+
			"if a page of yours must post here, add its origin to http.trusted_origins")
	}))
	protected := cop.Handler(next)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if unchecked(r.URL.Path) {
			next.ServeHTTP(w, r)
			return
		}
		if !hosts.allows(r.Host) {
			warn("request for a host name that is not this server's refused (http.allowed_hosts)", zap.String("host", r.Host),
				zap.String("path", r.URL.Path), zap.String("peer", r.RemoteAddr))
			writeForbidden(w, fmt.Sprintf("forbidden: Host %q is not a name of this server; if it is, add it to http.allowed_hosts", NormalizeHost(r.Host)))
			return
		}
		protected.ServeHTTP(w, r)
	}), nil
}

func writeForbidden(w http.ResponseWriter, em string) {
	h := w.Header()
	h.Set("Content-Type", "application/json; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'")
	w.WriteHeader(http.StatusForbidden)
	b, _ := json.Marshal(Envelope{EC: http.StatusForbidden, EM: em})
	_, _ = w.Write(b)
}
