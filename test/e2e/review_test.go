package e2e

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sorakaq/sorakaq/internal/testenv"
)

// metricValue reads one sample of name from the server's /metrics,
// failing t when there is none.
func metricValue(t *testing.T, base, name string) float64 {
	t.Helper()
	v, ok := testenv.MetricValue(t, base, name, "")
	if !ok {
		t.Fatalf("/metrics has no %s", name)
	}
	return v
}

// TestJunkAuthorizationKeepsMemoryFlat (security review §2, high): with
// the per-client limit on, every distinct Authorization header was a
// limiter key kept 5 minutes, so junk headers grew the heap without end
// (200 requests of 1 MB: 32 MB to 618 MB). 1,500 requests with distinct
// 60 KiB junk tokens (90 MB of keys before) leave the binary's heap
// where it was.
func TestJunkAuthorizationKeepsMemoryFlat(t *testing.T) {
	t.Parallel()
	// pprof on: its heap profile with gc=1 collects the garbage first, so
	// the heap read after it is what the process keeps (without it the
	// figure is mostly the junk not collected yet, which a busy box lets
	// pile up past the bound)
	srv := StartServer(t, "SORAKAQ_RECEIVE_RATE_LIMIT_PER_CLIENT=1000", "SORAKAQ_RECEIVE_RATE_LIMIT_BURST=1000", "SORAKAQ_ADMIN_PPROF=true")
	base := "http://" + srv.ReceiveAddr
	liveHeap := func() float64 {
		t.Helper()
		req, _ := http.NewRequest("GET", "http://"+srv.AdminAddr+"/debug/pprof/heap?gc=1", nil)
		req.Header.Set("Authorization", "Bearer "+adminToken)
		resp, err := httpc.Do(req)
		if err != nil {
			t.Fatalf("heap profile (a GC first): %v", err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("heap profile (a GC first): HTTP %d", resp.StatusCode)
		}
		return metricValue(t, base, "go_memstats_heap_alloc_bytes")
	}
	before := liveHeap()
	pad := strings.Repeat("x", 60<<10)
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := next.Add(1); i <= 1500; i = next.Add(1) {
				req, _ := http.NewRequest("GET", base+"/sorakaq/msg/get?msg_id=d4l6s3q1bg5f3ci8m0a0", nil)
				req.Header.Set("Authorization", fmt.Sprintf("Bearer junk-%d-%s", i, pad))
				if resp, err := httpc.Do(req); err == nil {
					resp.Body.Close()
				}
			}
		}()
	}
	wg.Wait()
	after := liveHeap()
	t.Logf("heap after a GC: before %.1f MB, after 1,500 junk tokens %.1f MB", before/1e6, after/1e6)
	if after-before > 45e6 {
		t.Fatalf("1,500 distinct junk Authorization headers grew the heap by %.0f MB (from %.0f MB)", (after-before)/1e6, before/1e6)
	}
}

// TestPerHostCapByAddress (security review §4): the per-host callback cap
// counted each spelling of a host apart, so one slow receiver written
// four ways took four caps. With callback.max_conns_per_host 2, messages
// to 127.0.0.1, localhost and two IPv4-mapped spellings of it never have
// more than 2 calls in flight at the receiver.
func TestPerHostCapByAddress(t *testing.T) {
	t.Parallel()
	var inFlight, most atomic.Int64
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := inFlight.Add(1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		time.Sleep(700 * time.Millisecond)
		inFlight.Add(-1)
		w.Write([]byte(`{"result":true}`))
	}))
	defer slow.Close()
	srv := StartServer(t, "SORAKAQ_CALLBACK_MAX_CONNS_PER_HOST=2")
	p := port(slow.Listener.Addr().String())
	var ids []string
	for i := 0; i < 3; i++ {
		for _, host := range []string{"127.0.0.1", "localhost", "[::ffff:127.0.0.1]", "[::ffff:7f00:1]"} {
			s := srv.Submit(t, SubmitReq{TopicName: "hostcap", DelayTime: 0, TTR: 10000,
				Callback: CBField{RequestType: "POST", URL: "http://" + host + ":" + p + "/slow"}})
			ids = append(ids, s.ID)
		}
	}
	for _, id := range ids {
		srv.WaitState(t, id, "delivered", 60*time.Second)
	}
	if m := most.Load(); m > 2 {
		t.Fatalf("the receiver had %d calls in flight at once, want at most callback.max_conns_per_host = 2", m)
	}
}

// TestAnswerHeadersCapped (security review §5): a receiver's answer
// headers were read up to Go's 10 MiB default per call (12 calls: 41 MB
// to 158 MB, all delivered). Now an answer whose headers pass
// callback.max_header_bytes (64 KiB) is a failed attempt.
func TestAnswerHeadersCapped(t *testing.T) {
	t.Parallel()
	big := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for i := 0; i < 20; i++ {
			w.Header().Set(fmt.Sprintf("X-Pad-%d", i), strings.Repeat("y", 8<<10))
		}
		w.Write([]byte(`{"result":true}`))
	}))
	defer big.Close()
	srv := Shared(t)
	s := srv.Submit(t, SubmitReq{TopicName: "bigheaders", DelayTime: 0, Callback: CBField{RequestType: "POST", URL: big.URL + "/big"}})
	m := srv.WaitState(t, s.ID, "dead", 30*time.Second)
	if !strings.Contains(m.LastError, "header") {
		t.Fatalf("an answer with 160 KiB of headers: %+v, want dead with an error about the headers", m)
	}
}
