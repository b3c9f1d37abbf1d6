package testenv

import (
	"compress/gzip"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	collector "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"
)

// Span is one span an OTLPSink received, ids in hex.
type Span struct {
	Name, TraceID, SpanID, ParentID string
	Kind                            int32
	Service, Role                   string
	Attrs                           map[string]string // string attributes; ints as decimal
	Error                           bool              // status code ERROR
}

// OTLPSink is a small OTLP/HTTP collector for tests: it takes protobuf
// ExportTraceServiceRequests on /v1/traces and keeps their spans.
type OTLPSink struct {
	srv *httptest.Server

	mu    sync.Mutex
	spans []Span
}

// NewOTLPSink starts one on loopback, closed when the test ends.
func NewOTLPSink(t testing.TB) *OTLPSink {
	s := &OTLPSink{}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.srv.Close)
	return s
}

// URL is the endpoint to give tracing.otlp_endpoint (no path: the default
// /v1/traces is added).
func (s *OTLPSink) URL() string { return s.srv.URL }

func (s *OTLPSink) serve(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/v1/traces" {
		http.NotFound(w, r)
		return
	}
	var body io.Reader = r.Body
	if r.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		body = zr
	}
	raw, err := io.ReadAll(body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var req collector.ExportTraceServiceRequest
	if err := proto.Unmarshal(raw, &req); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var got []Span
	for _, rs := range req.ResourceSpans {
		res := map[string]string{}
		for _, a := range rs.GetResource().GetAttributes() {
			res[a.Key] = a.GetValue().GetStringValue()
		}
		for _, ss := range rs.ScopeSpans {
			for _, sp := range ss.Spans {
				x := Span{Name: sp.Name, TraceID: hex.EncodeToString(sp.TraceId), SpanID: hex.EncodeToString(sp.SpanId),
					ParentID: hex.EncodeToString(sp.ParentSpanId), Kind: int32(sp.Kind),
					Service: res["service.name"], Role: res["sorakaq.role"], Attrs: map[string]string{},
					Error: sp.GetStatus().GetCode() == 2}
				for _, a := range sp.Attributes {
					v := a.GetValue()
					switch {
					case v.GetStringValue() != "":
						x.Attrs[a.Key] = v.GetStringValue()
					default:
						x.Attrs[a.Key] = strconv.FormatInt(v.GetIntValue(), 10)
					}
				}
				got = append(got, x)
			}
		}
	}
	s.mu.Lock()
	s.spans = append(s.spans, got...)
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/x-protobuf")
	out, _ := proto.Marshal(&collector.ExportTraceServiceResponse{})
	w.Write(out)
}

// Spans returns the spans received so far.
func (s *OTLPSink) Spans() []Span {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Span(nil), s.spans...)
}

// Wait waits up to d until cond holds for the spans received, failing t
// with what arrived if it does not.
func (s *OTLPSink) Wait(t testing.TB, d time.Duration, what string, cond func([]Span) bool) []Span {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		sp := s.Spans()
		if cond(sp) {
			return sp
		}
		if time.Now().After(deadline) {
			t.Fatalf("OTLP: no %s within %v; received %d spans: %+v", what, d, len(sp), sp)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
