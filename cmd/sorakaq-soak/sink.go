package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// callback is one call the sink received.
type callback struct {
	ID      string `json:"id"`
	Attempt int    `json:"attempt"`
	DueAt   int64  `json:"due_at"`  // X-Sorakaq-Due-At, unix ms (0 if missing)
	Arrived int64  `json:"arrived"` // unix ms
	Fail    bool   `json:"fail"`    // answered 500 (the /fail path)
	I       int    `json:"i"`       // the plan index (?i= of the callback URL), -1 if missing
}

// sink records every callback. /ok answers 200, /fail answers 500.
type sink struct {
	ln  net.Listener
	srv *http.Server

	mu   sync.Mutex
	byID map[string][]callback
	all  int
}

func newSink(addr string) (*sink, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	s := &sink{ln: ln, byID: map[string][]callback{}}
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
	now := time.Now().UnixMilli()
	io.Copy(io.Discard, r.Body)
	cb := callback{ID: r.Header.Get("X-Sorakaq-Msg-Id"), Arrived: now, Fail: r.URL.Path == "/fail"}
	cb.Attempt, _ = strconv.Atoi(r.Header.Get("X-Sorakaq-Attempt"))
	if i, err := strconv.Atoi(r.URL.Query().Get("i")); err == nil {
		cb.I = i
	} else {
		cb.I = -1
	}
	cb.DueAt, _ = strconv.ParseInt(r.Header.Get("X-Sorakaq-Due-At"), 10, 64)
	s.mu.Lock()
	s.byID[cb.ID] = append(s.byID[cb.ID], cb)
	s.all++
	s.mu.Unlock()
	if cb.Fail {
		http.Error(w, "soak: this callback always fails", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	w.Write([]byte("ok"))
}

// snapshot copies what was received so far.
func (s *sink) snapshot() (map[string][]callback, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := make(map[string][]callback, len(s.byID))
	for k, v := range s.byID {
		m[k] = append([]callback(nil), v...)
	}
	return m, s.all
}

func (s *sink) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	s.srv.Shutdown(ctx)
}
