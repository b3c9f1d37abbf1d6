package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"
)

// sink records every callback. /ok answers 200, /fail answers 500.
type sink struct {
	ln  net.Listener
	srv *http.Server

	mu  sync.Mutex
	all []CallbackEvent
}

func newSink(addr string) (*sink, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	s := &sink{ln: ln}
	s.srv = &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
	go s.srv.Serve(ln)
	return s, nil
}

func (s *sink) url(fail bool) string {
	if fail {
		return "http://" + s.ln.Addr().String() + "/fail"
	}
	return "http://" + s.ln.Addr().String() + "/ok"
}

func (s *sink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	now := time.Now().UnixMicro()
	io.Copy(io.Discard, r.Body)
	cb := CallbackEvent{ID: r.Header.Get("X-Sorakaq-Msg-Id"), ArrivedUs: now, Fail: r.URL.Path == "/fail"}
	cb.Attempt, _ = strconv.Atoi(r.Header.Get("X-Sorakaq-Attempt"))
	if i, err := strconv.Atoi(r.URL.Query().Get("i")); err == nil {
		cb.I = i
	} else {
		cb.I = -1
	}
	cb.DueAt, _ = strconv.ParseInt(r.Header.Get("X-Sorakaq-Due-At"), 10, 64)
	s.mu.Lock()
	s.all = append(s.all, cb)
	s.mu.Unlock()
	if cb.Fail {
		http.Error(w, "soak: this callback always fails", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	w.Write([]byte("ok"))
}

// snapshot copies what was received so far.
func (s *sink) snapshot() []CallbackEvent {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.all)
}

func (s *sink) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	s.srv.Shutdown(ctx)
}
