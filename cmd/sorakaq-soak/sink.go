package main

import (
	"net/http"
	"net/url"
	"strconv"
	"sync"

	"github.com/sorakaq/sorakaq/internal/testsink"
)

// sink records every callback (testsink's lean path). /ok answers 200,
// /fail answers 500.
type sink struct {
	*testsink.Sink

	mu     sync.Mutex
	events []CallbackEvent // the calls read so far, as events
}

var (
	soakOK   = testsink.Answer{Status: http.StatusOK, Body: "ok", ContentType: "text/plain"}
	soakFail = testsink.Answer{Status: http.StatusInternalServerError, Body: "soak: this callback always fails\n", ContentType: "text/plain; charset=utf-8"}
)

func newSink(addr string) (*sink, error) {
	s, err := testsink.Listen(testsink.Options{Addr: addr, Answer: func(c testsink.Call) testsink.Answer {
		if c.Path == "/fail" {
			return soakFail
		}
		return soakOK
	}})
	if err != nil {
		return nil, err
	}
	return &sink{Sink: s}, nil
}

func (s *sink) url(fail bool) string {
	if fail {
		return s.URL("fail")
	}
	return s.URL("ok")
}

// event is the soak's record of a call: the plan index from ?i= (-1 if
// missing), arrival in µs, Fail for the /fail path.
func event(c testsink.Call) CallbackEvent {
	cb := CallbackEvent{ID: c.MsgID, Attempt: c.Attempt, DueAt: c.DueAt, ArrivedUs: c.ArrivalNs / 1e3, Fail: c.Path == "/fail"}
	q, _ := url.ParseQuery(c.RawQuery)
	if i, err := strconv.Atoi(q.Get("i")); err == nil {
		cb.I = i
	} else {
		cb.I = -1
	}
	return cb
}

// snapshot copies what was received so far.
func (s *sink) snapshot() []CallbackEvent {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.From(len(s.events)) {
		s.events = append(s.events, event(c))
	}
	return append([]CallbackEvent(nil), s.events...)
}

func (s *sink) close() { s.Close() }
