package main

import (
	"time"

	"github.com/sorakaq/sorakaq/internal/testsink"
)

// cbRecord is one callback the sink received. Lateness is computed from
// ArrivalNs (the sink's clock when the handler started) by analyzeFire,
// against both the server's due time (DueAt) and the client's send time
// + delay; BadHdr says Msg-Id or Due-At was missing or unparsable.
type cbRecord = testsink.Call

// okText is the answer of -mode fire's sink: 200 "ok" (keep-alive).
var okText = testsink.Answer{Status: 200, Body: "ok", ContentType: "text/plain"}

// newSink starts the callback receiver of -mode fire, with room for
// expect callbacks. It is testsink's lean path: it reads the clock first,
// parses three headers, drains the body, appends under a mutex and
// answers okText; its callback URL is URL("cb").
func newSink(addr string, expect int) (*testsink.Sink, error) {
	return testsink.Listen(testsink.Options{Addr: addr, Expect: expect, IdleTimeout: 5 * time.Minute,
		Answer: func(testsink.Call) testsink.Answer { return okText }})
}
