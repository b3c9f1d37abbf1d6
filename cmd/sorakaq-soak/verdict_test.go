package main

import (
	"fmt"
	"slices"
	"testing"
	"time"
)

// A hand-made event log. Times are µs; t0 is ms-aligned so that a server
// that reads its clock 0.5 ms after the send and truncates to the ms gives
// exactly sent + delay.
const t0 = int64(1_700_000_000_000) * 1000

var testBounds = Bounds{FailAttempts: 3, MaxLate: 2 * time.Second, MaxSchedErr: 500 * time.Millisecond, MaxDup: 0, MaxUnacked: 0}

// acked is a submit sent at sent (µs), answered 2 ms later at the first try.
func acked(i int, plan string, sent, delayMs int64) MsgLog {
	return MsgLog{I: i, Plan: plan, DelayMs: delayMs, Submit: Call{
		SentUs: sent, LastSentUs: sent, AnsweredUs: sent + 2000, Status: 200, Tries: 1,
		DueAt: (sent+500)/1000 + delayMs, ID: fmt.Sprintf("id%02d", i),
	}}
}

func cb(m MsgLog, attempt int, dueMs, afterDueUs int64, fail bool) CallbackEvent {
	return CallbackEvent{ID: m.Submit.ID, I: m.I, Attempt: attempt, DueAt: dueMs, ArrivedUs: dueMs*1000 + afterDueUs, Fail: fail}
}

// cleanLog has one message of every kind and outcome, all as promised.
func cleanLog() *EventLog {
	l := &EventLog{}
	add := func(m MsgLog, cbs ...CallbackEvent) {
		l.Messages = append(l.Messages, m)
		l.Callbacks = append(l.Callbacks, cbs...)
	}
	// plain, delivered 3 ms after due.
	m := acked(0, kPlain, t0, 1000)
	m.State, m.Attempts = "delivered", 1
	add(m, cb(m, 1, m.Submit.DueAt, 3000, false))

	// cancel 200 well before due: never called back.
	m = acked(1, kCancel, t0+10_000, 2000)
	m.Act = &ActLog{Kind: kCancel, Call: Call{SentUs: t0 + 200_000, LastSentUs: t0 + 200_000, AnsweredUs: t0 + 201_000, Status: 200, Tries: 1}}
	m.State = "cancelled"
	add(m)

	// cancel in the race, 2 ms after due, answered 409: delivered.
	m = acked(2, kCancel, t0+20_000, 1500)
	due := m.Submit.DueAt
	m.Act = &ActLog{Kind: kCancel, Race: true, Call: Call{SentUs: due*1000 + 2000, LastSentUs: due*1000 + 2000, AnsweredUs: due*1000 + 3000, Status: 409, Tries: 1}}
	m.State, m.Attempts = "delivered", 1
	add(m, cb(m, 1, due, 1000, false))

	// setDelay to 0 (overdue), answered 200: delivered at once.
	m = acked(3, kSetDelay, t0+30_000, 5000)
	sd := t0 + 300_000
	m.Act = &ActLog{Kind: kSetDelay, NewDelayMs: 0, Call: Call{SentUs: sd, LastSentUs: sd, AnsweredUs: sd + 1000, Status: 200, Tries: 1, DueAt: (sd + 500) / 1000}}
	m.State, m.Attempts = "delivered", 1
	add(m, cb(m, 1, m.Act.DueAt, 4000, false))

	// setDelay longer, answered 200 after two tries (the first answer lost).
	m = acked(4, kSetDelay, t0+40_000, 1000)
	sd = t0 + 500_000
	m.Act = &ActLog{Kind: kSetDelay, NewDelayMs: 3000, Call: Call{SentUs: sd, LastSentUs: sd + 300_000, AnsweredUs: sd + 301_000, Status: 200, Tries: 2, DueAt: (sd+500)/1000 + 3000}}
	m.State, m.Attempts = "delivered", 1
	add(m, cb(m, 1, m.Act.DueAt, 2000, false))

	// fail plan: 3 attempts, dead.
	m = acked(5, kFail, t0+50_000, 1000)
	due = m.Submit.DueAt
	m.State, m.Attempts = "dead", 3
	add(m, cb(m, 1, due, 2000, true), cb(m, 2, due+202, 1000, true), cb(m, 3, due+604, 1000, true))

	// submit retried during an outage (its stored try was the second): delivered.
	m = acked(6, kPlain, t0+60_000, 2000)
	m.Submit.Tries, m.Submit.LastSentUs, m.Submit.AnsweredUs = 3, t0+2_060_000, t0+2_062_000
	m.Submit.DueAt = (t0+1_060_500)/1000 + 2000
	m.State, m.Attempts = "delivered", 1
	add(m, cb(m, 1, m.Submit.DueAt, 5000, false))

	// cancel never answered, and it took: cancelled, no callback.
	m = acked(7, kCancel, t0+70_000, 3000)
	m.Act = &ActLog{Kind: kCancel, Call: Call{SentUs: t0 + 400_000, LastSentUs: t0 + 100_000_000, AnsweredUs: t0 + 120_000_000, Status: 0, Tries: 30}}
	m.State = "cancelled"
	add(m)
	return l
}

func TestCleanLogPasses(t *testing.T) {
	v := Judge(cleanLog(), testBounds)
	if v.Failed() {
		t.Fatalf("clean log failed: %s; problems %+v", v.FailureList(), v.Problems)
	}
	c := v.Counts
	if c.Acknowledged != 8 || c.Delivered != 5 || c.CancelledOK != 2 || c.DeadOK != 1 || c.ExpectEither != 1 {
		t.Fatalf("counts %+v", c)
	}
	if v.Late.Server.N != 6 || v.Late.Client.N != 6 || v.Late.SchedErr.N != 8 {
		t.Fatalf("lateness samples %+v", v.Late)
	}
	if v.Late.Client.Max != 1005 { // the retried submit: first sent 1 s before the stored try
		t.Fatalf("client lateness max %v, want 1005 ms", v.Late.Client.Max)
	}
}

// mutate changes message i of a clean log (and may replace its callbacks).
func mutate(i int, f func(m *MsgLog, cbs []CallbackEvent) []CallbackEvent) *EventLog {
	l := cleanLog()
	m := &l.Messages[i]
	var mine, rest []CallbackEvent
	for _, c := range l.Callbacks {
		if c.ID == m.Submit.ID {
			mine = append(mine, c)
		} else {
			rest = append(rest, c)
		}
	}
	l.Callbacks = append(rest, f(m, mine)...)
	return l
}

func TestEachClassFails(t *testing.T) {
	cases := []struct {
		name   string
		log    *EventLog
		bounds func(*Bounds)
		want   []string
	}{
		{"plain never called back, server says delivered", mutate(0, func(m *MsgLog, _ []CallbackEvent) []CallbackEvent { return nil }),
			nil, []string{fLost}},
		{"plain only called back with a failure", mutate(0, func(m *MsgLog, c []CallbackEvent) []CallbackEvent {
			c[0].Fail = true
			return c
		}), nil, []string{fLost}},
		{"cancel answered 404, message vanished", mutate(1, func(m *MsgLog, c []CallbackEvent) []CallbackEvent {
			m.Act.Status, m.State, m.GetStatus = 404, "not_found", 404
			return c
		}), nil, []string{fLost, fUnexpectedAns, fNotFinal}},
		{"cancel answered 409, never delivered", mutate(2, func(m *MsgLog, c []CallbackEvent) []CallbackEvent {
			m.State = "delayed"
			return nil
		}), nil, []string{fLost, fNotFinal}},
		{"callback after a cancel answered 200", mutate(1, func(m *MsgLog, c []CallbackEvent) []CallbackEvent {
			return []CallbackEvent{cb(*m, 1, m.Submit.DueAt, 1000, false)}
		}), nil, []string{fCancelViol}},
		{"callback in flight while a cancel was answered 200 (hard race)", mutate(2, func(m *MsgLog, c []CallbackEvent) []CallbackEvent {
			m.Act.Status, m.State = 200, "cancelled"
			c[0].ArrivedUs = m.Act.SentUs + 500
			return c
		}), nil, []string{fCancelViol}},
		{"cancel unanswered, no callback, still delayed", mutate(7, func(m *MsgLog, c []CallbackEvent) []CallbackEvent {
			m.State = "delayed"
			return nil
		}), nil, []string{fLost, fNotFinal}},
		{"fail plan dead with 0 callbacks", mutate(5, func(m *MsgLog, c []CallbackEvent) []CallbackEvent { return nil }),
			nil, []string{fLost}},
		{"fail plan dead after 2 attempts", mutate(5, func(m *MsgLog, c []CallbackEvent) []CallbackEvent {
			m.Attempts = 2
			return c[:2]
		}), nil, []string{fDeadAttempts}},
		{"fail plan dead, server counts 3, the sink saw attempts 1 and 3", mutate(5, func(m *MsgLog, c []CallbackEvent) []CallbackEvent {
			return []CallbackEvent{c[0], c[2]}
		}), nil, []string{fDeadAttempts}},
		{"fail plan dead with 4 attempts", mutate(5, func(m *MsgLog, c []CallbackEvent) []CallbackEvent {
			m.Attempts = 4
			return append(c, cb(*m, 4, m.Submit.DueAt+1000, 1000, true))
		}), nil, []string{fDeadAttempts}},
		{"fail plan still retrying", mutate(5, func(m *MsgLog, c []CallbackEvent) []CallbackEvent {
			m.State, m.Attempts = "retrying", 2
			return c[:2]
		}), nil, []string{fNotFinal, fDeadAttempts}},
		{"plain delivered at the sink, state delivering", mutate(0, func(m *MsgLog, c []CallbackEvent) []CallbackEvent {
			m.State = "delivering"
			return c
		}), nil, []string{fNotFinal}},
		{"plain delivered at the sink, state unreadable", mutate(0, func(m *MsgLog, c []CallbackEvent) []CallbackEvent {
			m.State = "unknown(0 connection refused)"
			return c
		}), nil, []string{fNotFinal}},
		{"plain delivered at the sink, state dead", mutate(0, func(m *MsgLog, c []CallbackEvent) []CallbackEvent {
			m.State = "dead"
			return c
		}), nil, []string{fWrongFinal}},
		{"cancel 200, no callback, state delivered", mutate(1, func(m *MsgLog, c []CallbackEvent) []CallbackEvent {
			m.State = "delivered"
			return c
		}), nil, []string{fWrongFinal}},
		{"callback 3 s after its due time", mutate(0, func(m *MsgLog, c []CallbackEvent) []CallbackEvent {
			c[0].ArrivedUs += 3_000_000
			return c
		}), nil, []string{fLate}},
		{"retry 3 s after its due time", mutate(5, func(m *MsgLog, c []CallbackEvent) []CallbackEvent {
			c[2].ArrivedUs += 3_000_000
			return c
		}), nil, []string{fLate}},
		{"callback before X-Sorakaq-Due-At", mutate(0, func(m *MsgLog, c []CallbackEvent) []CallbackEvent {
			c[0].DueAt += 5
			return c
		}), nil, []string{fEarlyServer}},
		{"callback before sent + delay: due_at truncated", mutate(0, func(m *MsgLog, c []CallbackEvent) []CallbackEvent {
			m.Submit.SentUs += 700 // sent 0.7 ms into the ms; the server's due is the ms it started
			m.Submit.LastSentUs = m.Submit.SentUs
			c[0].ArrivedUs = m.Submit.DueAt*1000 + 200
			return c
		}), nil, []string{fEarlyClient, fSchedErr}},
		{"due_at moved later than the answer allows", mutate(0, func(m *MsgLog, c []CallbackEvent) []CallbackEvent {
			m.Submit.DueAt += 5000
			return []CallbackEvent{cb(*m, 1, m.Submit.DueAt, 2000, false)}
		}), nil, []string{fSchedErr, fLate}},
		{"due_at 800 ms after sent + delay (slow answer)", mutate(0, func(m *MsgLog, c []CallbackEvent) []CallbackEvent {
			m.Submit.AnsweredUs = m.Submit.SentUs + 900_000
			m.Submit.DueAt += 800
			return []CallbackEvent{cb(*m, 1, m.Submit.DueAt, 2000, false)}
		}), nil, []string{fSchedErr}},
		{"setDelay 200 ignored: fired on the old schedule", mutate(4, func(m *MsgLog, c []CallbackEvent) []CallbackEvent {
			return []CallbackEvent{cb(*m, 1, m.Submit.DueAt, 2000, false)}
		}), nil, []string{fEarlyClient, fEarlyServer}},
		{"overdue setDelay 200 ignored: fired 5 s later on the old schedule", mutate(3, func(m *MsgLog, c []CallbackEvent) []CallbackEvent {
			return []CallbackEvent{cb(*m, 1, m.Submit.DueAt, 2000, false)}
		}), nil, []string{fLate}},
		{"setDelay 200 in the race, the old callback had already started", mutate(3, func(m *MsgLog, c []CallbackEvent) []CallbackEvent {
			c[0].DueAt = m.Submit.DueAt
			c[0].ArrivedUs = m.Act.SentUs - 1000
			return c
		}), nil, []string{fEarlyClient, fEarlyServer}},
		{"setDelay answered 404", mutate(3, func(m *MsgLog, c []CallbackEvent) []CallbackEvent {
			m.Act.Status, m.Act.DueAt = 404, 0
			return []CallbackEvent{cb(*m, 1, m.Submit.DueAt, 2000, false)}
		}), nil, []string{fUnexpectedAns}},
		{"a duplicate of attempt 1", mutate(0, func(m *MsgLog, c []CallbackEvent) []CallbackEvent {
			return append(c, cb(*m, 1, m.Submit.DueAt, 9000, false))
		}), nil, []string{fDuplicates}},
		{"attempt 2 after a success", mutate(0, func(m *MsgLog, c []CallbackEvent) []CallbackEvent {
			return append(c, cb(*m, 2, m.Submit.DueAt, 9000, false))
		}), nil, []string{fDuplicates}},
		{"two duplicates, bound 1", mutate(0, func(m *MsgLog, c []CallbackEvent) []CallbackEvent {
			return append(c, cb(*m, 1, m.Submit.DueAt, 9000, false), cb(*m, 1, m.Submit.DueAt, 9500, false))
		}), func(b *Bounds) { b.MaxDup = 1 }, []string{fDuplicates}},
		{"callback of an unknown id", func() *EventLog {
			l := cleanLog()
			l.Callbacks = append(l.Callbacks, CallbackEvent{ID: "stranger", I: 0, Attempt: 1, DueAt: t0 / 1000, ArrivedUs: t0 + 1000})
			return l
		}(), nil, []string{fUnknownID}},
		{"callback of an id without plan index", func() *EventLog {
			l := cleanLog()
			l.Callbacks = append(l.Callbacks, CallbackEvent{ID: "stranger", I: -1, Attempt: 1, DueAt: t0 / 1000, ArrivedUs: t0 + 1000})
			return l
		}(), nil, []string{fUnknownID}},
		{"unacknowledged submit", mutate(0, func(m *MsgLog, c []CallbackEvent) []CallbackEvent {
			m.Submit.Status, m.Submit.ID = 0, ""
			return nil
		}), nil, []string{fUnacked}},
		{"submit answered 400", mutate(0, func(m *MsgLog, c []CallbackEvent) []CallbackEvent {
			m.Submit.Status, m.Submit.ID = 400, ""
			return nil
		}), func(b *Bounds) { b.MaxUnacked = 1 }, []string{fUnexpectedAns}},
		{"nothing acknowledged", &EventLog{Messages: []MsgLog{{I: 0, Plan: kPlain, DelayMs: 1000}}},
			func(b *Bounds) { b.MaxUnacked = 1 }, []string{fUnacked}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := testBounds
			if tc.bounds != nil {
				tc.bounds(&b)
			}
			v := Judge(tc.log, b)
			if !v.Failed() {
				t.Fatalf("passed; want %v", tc.want)
			}
			for _, w := range tc.want {
				if v.Failures[w] == 0 {
					t.Errorf("class %s did not fail; failures: %s", w, v.FailureList())
				}
			}
			for c := range v.Failures {
				if !slices.Contains(tc.want, c) {
					t.Errorf("class %s failed too (%s); problems %+v", c, v.FailureList(), v.Problems)
				}
			}
		})
	}
}

// The bounds are what they say: a log just inside them passes.
func TestBoundsAllow(t *testing.T) {
	t.Run("duplicates within bound", func(t *testing.T) {
		l := mutate(0, func(m *MsgLog, c []CallbackEvent) []CallbackEvent {
			return append(c, cb(*m, 1, m.Submit.DueAt, 9000, false))
		})
		b := testBounds
		b.MaxDup = 1
		if v := Judge(l, b); v.Failed() {
			t.Fatalf("failed: %s", v.FailureList())
		}
	})
	t.Run("early within tolerance", func(t *testing.T) {
		l := mutate(0, func(m *MsgLog, c []CallbackEvent) []CallbackEvent {
			m.Submit.SentUs += 700
			m.Submit.LastSentUs = m.Submit.SentUs
			c[0].ArrivedUs = m.Submit.DueAt*1000 + 200
			return c
		})
		b := testBounds
		b.EarlyTol = time.Millisecond
		v := Judge(l, b)
		if v.Failed() {
			t.Fatalf("failed: %s", v.FailureList())
		}
		if v.Late.MaxEarlyC != 0.5 {
			t.Fatalf("max early on the client's clock %v ms, want 0.5", v.Late.MaxEarlyC)
		}
	})
	t.Run("late within bound", func(t *testing.T) {
		l := mutate(0, func(m *MsgLog, c []CallbackEvent) []CallbackEvent {
			c[0].ArrivedUs += 1_900_000
			return c
		})
		if v := Judge(l, testBounds); v.Failed() {
			t.Fatalf("failed: %s", v.FailureList())
		}
	})
	t.Run("unknown id of an unacknowledged submit", func(t *testing.T) {
		l := mutate(0, func(m *MsgLog, c []CallbackEvent) []CallbackEvent {
			m.Submit.Status, m.Submit.ID = 0, ""
			return []CallbackEvent{{ID: "stored-but-unanswered", I: 0, Attempt: 1, DueAt: t0/1000 + 1000, ArrivedUs: t0 + 1_001_000}}
		})
		b := testBounds
		b.MaxUnacked = 1
		v := Judge(l, b)
		if v.Failed() {
			t.Fatalf("failed: %s", v.FailureList())
		}
		if v.Counts.UnknownIDs != 1 || v.Counts.UnknownOfUnack != 1 {
			t.Fatalf("counts %+v", v.Counts)
		}
	})
}
