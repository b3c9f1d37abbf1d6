package main

import (
	"io"
	"net/http"
	"strconv"
	"testing"
	"time"
)

func TestSlowFlags(t *testing.T) {
	c, err := parseFlags([]string{"-mode", "fire", "-n", "10", "-slow", "5", "-slow-ms", "2s"}, io.Discard)
	if err != nil || c.Slow != 5 || c.SlowAnswer != 2*time.Second || c.SlowAnswerS != 2 {
		t.Fatalf("%+v %v", c, err)
	}
	for _, args := range [][]string{
		{"-mode", "fire", "-slow", "5", "-ref"},
		{"-mode", "fire", "-slow", "5", "-pattern", "overlap"},
		{"-mode", "fire", "-slow", "-1"},
		{"-mode", "fire", "-slow", "5", "-slow-ms", "0s"},
	} {
		if _, err := parseFlags(args, io.Discard); err == nil {
			t.Errorf("%v: accepted", args)
		}
	}
}

// The slow sink answers after its delay and counts first attempts'
// lateness against X-Sorakaq-Due-At.
func TestSlowSink(t *testing.T) {
	ss, err := newSlowSink(150 * time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer ss.close()
	req, _ := http.NewRequest(http.MethodPost, ss.URL(), nil)
	req.Header.Set("X-Sorakaq-Due-At", strconv.FormatInt(time.Now().Add(-time.Second).UnixMilli(), 10))
	req.Header.Set("X-Sorakaq-Attempt", "1")
	start := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if el := time.Since(start); resp.StatusCode != 200 || el < 150*time.Millisecond {
		t.Fatalf("status %d after %v, want 200 after the delay", resp.StatusCode, el)
	}
	st := ss.stats(1)
	if st.Received != 1 || st.Lateness.Min < 900 || st.Lateness.Min > 5000 || st.AnswerMs != 150 {
		t.Fatalf("%+v", st)
	}
}
