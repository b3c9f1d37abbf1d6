package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// cbRecord is one callback the sink received. Lateness is computed from
// ArrivalNs by analyzeFire, against both the server's due time (DueAt) and
// the client's send time + delay.
type cbRecord struct {
	ID        string
	Attempt   int
	DueAt     int64 // X-Sorakaq-Due-At, unix ms
	ArrivalNs int64 // sink's wall clock when the handler started, unix ns
	BadHdr    bool  // Msg-Id or Due-At missing or unparsable
}

// sink is the callback receiver of -mode fire. It does the least it can
// per request: read the clock first, parse three headers, drain the body,
// append under a mutex, answer 200 "ok" (keep-alive).
type sink struct {
	ln  net.Listener
	srv *http.Server

	mu     sync.Mutex
	recs   []cbRecord
	seen   map[string]struct{}
	unique atomic.Int64
	total  atomic.Int64
}

var okBody = []byte("ok")

func newSink(addr string, expect int) (*sink, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	s := &sink{ln: ln, recs: make([]cbRecord, 0, expect), seen: make(map[string]struct{}, expect)}
	s.srv = &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 5 * time.Minute}
	go s.srv.Serve(ln)
	return s, nil
}

// URL is the callback URL to give the server.
func (s *sink) URL() string { return "http://" + s.ln.Addr().String() + "/cb" }

func (s *sink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	now := time.Now()
	rec := parseCallback(r.Header, now)
	if r.Body != nil {
		io.Copy(io.Discard, r.Body)
	}
	s.mu.Lock()
	s.recs = append(s.recs, rec)
	if _, dup := s.seen[rec.ID]; !dup {
		s.seen[rec.ID] = struct{}{}
		s.unique.Add(1)
	}
	s.mu.Unlock()
	s.total.Add(1)
	h := w.Header()
	h["Content-Type"] = []string{"text/plain"}
	h["Content-Length"] = []string{"2"}
	w.WriteHeader(http.StatusOK)
	w.Write(okBody)
}

func parseCallback(h http.Header, now time.Time) cbRecord {
	rec := cbRecord{ArrivalNs: now.UnixNano()}
	if v := h["X-Sorakaq-Msg-Id"]; len(v) > 0 {
		rec.ID = v[0]
	}
	if v := h["X-Sorakaq-Attempt"]; len(v) > 0 {
		rec.Attempt, _ = strconv.Atoi(v[0])
	}
	var due int64
	var err error = strconv.ErrSyntax
	if v := h["X-Sorakaq-Due-At"]; len(v) > 0 {
		due, err = strconv.ParseInt(v[0], 10, 64)
	}
	if rec.ID == "" || err != nil {
		rec.BadHdr = true
		return rec
	}
	rec.DueAt = due
	return rec
}

// records returns a copy of what was received so far.
func (s *sink) records() []cbRecord {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]cbRecord(nil), s.recs...)
}

func (s *sink) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	s.srv.Shutdown(ctx)
}
