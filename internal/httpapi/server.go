package httpapi

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"
)

// Server is one HTTP listener of a service. The socket is opened by
// Listen (so a test can bind 127.0.0.1:0 and read Addr before serving);
// it serves HTTPS when a certificate is given.
type Server struct {
	name      string
	ln        net.Listener
	srv       *http.Server
	cert, key string
}

// Listen opens addr for handler h; cert and key (PEM files) turn on TLS.
func Listen(name, addr string, h http.Handler, cert, key string) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%s: listen %s: %w", name, addr, err)
	}
	return &Server{name: name, ln: ln, cert: cert, key: key,
		srv: &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 120 * time.Second}}, nil
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
