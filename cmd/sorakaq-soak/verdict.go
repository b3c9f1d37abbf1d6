package main

import (
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"
)

// The verdict is a pure function of an event log: what the client sent and
// when, what it was answered, which callbacks reached the sink and when, and
// the final state of every acknowledged message. Judge reads nothing else,
// so the tests can feed it hand-made logs.
//
// Times are unix microseconds on the client's wall clock; due times are the
// server's unix milliseconds.

// Call is one API call as the client saw it (retries included).
type Call struct {
	SentUs     int64  `json:"sent_us"`          // first request sent
	LastSentUs int64  `json:"last_sent_us"`     // last request sent (the one that got the answer)
	AnsweredUs int64  `json:"answered_us"`      // definite answer read (or given up)
	Status     int    `json:"status"`           // HTTP status of the definite answer; 0 = none
	Tries      int    `json:"tries"`            // requests sent
	DueAt      int64  `json:"due_at,omitempty"` // due_at of a 200 answer (submit, setDelay), unix ms
	ID         string `json:"id,omitempty"`     // msgId of a 200 submit answer
}

// ActLog is the cancel or setDelay sent for a message.
type ActLog struct {
	Kind       string `json:"kind"`                   // kCancel or kSetDelay
	NewDelayMs int64  `json:"new_delay_ms,omitempty"` // setDelay's delay_time
	Race       bool   `json:"race,omitempty"`         // sent within a few ms of the due time
	Call
}

// MsgLog is one planned message.
type MsgLog struct {
	I       int     `json:"i"`
	Plan    string  `json:"plan"`
	DelayMs int64   `json:"delay_ms"`
	Submit  Call    `json:"submit"`
	Act     *ActLog `json:"act,omitempty"`
	// Final state read at the end (GET /sorakaq/msg/get); only for acknowledged messages.
	GetStatus int    `json:"get_status,omitempty"`
	State     string `json:"state,omitempty"` // "" or "not_found" or "unknown(...)" when it could not be read
	Attempts  int    `json:"attempts,omitempty"`
}

// CallbackEvent is one callback the sink received.
type CallbackEvent struct {
	ID        string `json:"id"`
	I         int    `json:"i"` // plan index from ?i= of the callback URL, -1 if missing
	Attempt   int    `json:"attempt"`
	DueAt     int64  `json:"due_at"`     // X-Sorakaq-Due-At, unix ms (0 if missing)
	ArrivedUs int64  `json:"arrived_us"` // unix µs, taken first thing in the handler
	Fail      bool   `json:"fail"`       // the /fail path (answered 500)
}

// EventLog is everything the verdict looks at.
type EventLog struct {
	Messages  []MsgLog
	Callbacks []CallbackEvent
}

// Bounds are the stated limits of a run.
type Bounds struct {
	FailAttempts int           // attempts a failing callback gets before dead
	MaxLate      time.Duration // no callback later than this after its due time (server's and client's)
	MaxSchedErr  time.Duration // server due_at minus (request sent + delay), for calls answered at the first try
	EarlyTol     time.Duration // how early (client clock) still counts as on time; 0 = never early
	MaxDup       int           // duplicate callbacks allowed (same id+attempt, or after a success)
	MaxUnacked   int           // submits without a definite 200 allowed
}

// Failure classes: each one fails the run.
const (
	fLost          = "lost"              // acknowledged, expected to be delivered, no successful callback
	fCancelViol    = "cancel_violated"   // cancel answered 200, yet a callback reached the sink
	fEarlyServer   = "early_server"      // callback before its X-Sorakaq-Due-At (or attempt 1 before the answered due_at)
	fEarlyClient   = "early_client"      // callback before request sent + delay (client clock)
	fLate          = "late"              // callback later than MaxLate after its due time
	fSchedErr      = "schedule_error"    // server due_at outside [sent + delay, answered + delay] or more than MaxSchedErr after sent + delay
	fDeadAttempts  = "dead_attempts"     // fail plan: dead with the wrong number of attempts, or missing attempts at the sink
	fNotFinal      = "not_final"         // not delivered/dead/cancelled at the end (retrying, delivering, delayed, not found, unreadable)
	fWrongFinal    = "wrong_final_state" // a final state other than the expected one
	fUnknownID     = "unknown_id"        // a callback id no acknowledged submit returned (and not of an unacknowledged submit)
	fDuplicates    = "duplicates"        // more duplicate callbacks than MaxDup
	fUnacked       = "unacknowledged"    // more unacknowledged submits than MaxUnacked
	fUnexpectedAns = "unexpected_answer" // a definite answer the API should not give here (submit 4xx, cancel/setDelay 404, ...)
)

var failureClasses = []string{fLost, fCancelViol, fEarlyServer, fEarlyClient, fLate, fSchedErr, fDeadAttempts,
	fNotFinal, fWrongFinal, fUnknownID, fDuplicates, fUnacked, fUnexpectedAns}

// Verdict is the outcome of Judge.
type Verdict struct {
	Counts   Counts            `json:"counts"`
	Failures map[string]int    `json:"failures"` // class -> messages (or callbacks) failing it; only non-zero classes
	Problems []Problem         `json:"problems,omitempty"`
	Late     LatenessSection   `json:"lateness_ms"`
	Unknown  []CallbackEvent   `json:"unknown_callbacks,omitempty"` // at most 100
	Bounds   map[string]string `json:"bounds"`
}

// LatenessSection: first callback of each message (any attempt) against the
// server's X-Sorakaq-Due-At and against the client's request sent + delay;
// schedule error = server due_at - (request sent + delay) of calls answered
// at the first try.
type LatenessSection struct {
	Server    Summary `json:"server"`
	Client    Summary `json:"client"`
	SchedErr  Summary `json:"schedule_error"`
	MaxEarlyS float64 `json:"max_early_server_ms"` // largest arrival before the server's due time
	MaxEarlyC float64 `json:"max_early_client_ms"` // largest arrival before the client's due time
}

// Problem is one message (or unknown id) that fails a class.
type Problem struct {
	I       int      `json:"i"`
	ID      string   `json:"id,omitempty"`
	Plan    string   `json:"plan,omitempty"`
	Classes []string `json:"classes"`
	Detail  []string `json:"detail"`
}

// Counts are the totals of a run.
type Counts struct {
	Planned         map[string]int `json:"planned"`
	Acknowledged    int            `json:"acknowledged"`
	Unacknowledged  int            `json:"unacknowledged"`
	SubmitRetried   int            `json:"submit_retried"`
	ExpectDelivered int            `json:"expect_delivered"`
	ExpectCancelled int            `json:"expect_cancelled"`
	ExpectDead      int            `json:"expect_dead"`
	ExpectEither    int            `json:"expect_either"` // cancel with no definite answer
	Delivered       int            `json:"delivered"`
	CancelledOK     int            `json:"cancelled_ok"`
	DeadOK          int            `json:"dead_ok"`
	DupCallbacks    int            `json:"dup_callbacks"` // extra callbacks of the same id and attempt
	AfterSuccess    int            `json:"after_success"` // callbacks after a successful one (other attempt)
	UnknownIDs      int            `json:"unknown_ids"`
	UnknownOfUnack  int            `json:"unknown_of_unacked"` // ids traced (?i=) to a submit never acknowledged
	Callbacks       int            `json:"callbacks"`
	CancelAnswers   map[string]int `json:"cancel_answers"`   // "200", "409", "race 200", ...
	SetDelayAnswers map[string]int `json:"setdelay_answers"` // "200", "overdue 200", "race 409", ...
	FinalStates     map[string]int `json:"final_states"`
}

// Failed reports whether any class failed.
func (v *Verdict) Failed() bool { return len(v.Failures) > 0 }

// FailureList is "class n, ..." in a fixed order.
func (v *Verdict) FailureList() string {
	var parts []string
	for _, c := range failureClasses {
		if n := v.Failures[c]; n > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", c, n))
		}
	}
	return strings.Join(parts, ", ")
}

func isFinal(s string) bool { return s == "delivered" || s == "dead" || s == "cancelled" }

func msF(us int64) float64 { return float64(us) / 1000 }

// effDelayMs is the delay the server applies: below 100 ms means at once.
func effDelayMs(d int64) int64 {
	if d < 100 {
		return 0
	}
	return d
}

// expectation is what must become of an acknowledged message, from its plan
// and the answers: eDelivered, eCancelled (cancel answered 200), eEither
// (cancel never answered) or eDead (fail plan). Any other answer to a cancel
// (409, or a 404 for a message that vanished) leaves it expected delivered.
func expectation(m *MsgLog) string {
	switch {
	case m.Plan == kFail:
		return eDead
	case m.Act != nil && m.Act.Kind == kCancel && m.Act.Status == 200:
		return eCancelled
	case m.Act != nil && m.Act.Kind == kCancel && m.Act.Status == 0:
		return eEither
	}
	return eDelivered
}

// Judge checks every message against its plan and the answers it got.
func Judge(log *EventLog, b Bounds) *Verdict {
	v := &Verdict{Failures: map[string]int{}}
	c := &v.Counts
	c.Planned, c.CancelAnswers, c.SetDelayAnswers, c.FinalStates = map[string]int{}, map[string]int{}, map[string]int{}, map[string]int{}
	c.Callbacks = len(log.Callbacks)
	v.Bounds = map[string]string{
		"fail_attempts": fmt.Sprint(b.FailAttempts), "max_late": b.MaxLate.String(), "max_schedule_error": b.MaxSchedErr.String(),
		"early_tolerance": b.EarlyTol.String(), "max_dup": fmt.Sprint(b.MaxDup), "max_unacked": fmt.Sprint(b.MaxUnacked),
	}
	byID := map[string][]CallbackEvent{}
	for _, cb := range log.Callbacks {
		byID[cb.ID] = append(byID[cb.ID], cb)
	}
	acked := map[string]bool{}
	unackedIdx := map[int]bool{}
	var lateS, lateC, sched []float64
	maxLateUs, tolUs, maxSchedUs := b.MaxLate.Microseconds(), b.EarlyTol.Microseconds(), b.MaxSchedErr.Microseconds()

	for _, m := range log.Messages {
		c.Planned[m.Plan]++
		p := Problem{I: m.I, ID: m.Submit.ID, Plan: m.Plan}
		fail := func(class, format string, args ...any) {
			if !slices.Contains(p.Classes, class) {
				p.Classes = append(p.Classes, class)
				v.Failures[class]++
			}
			p.Detail = append(p.Detail, class+": "+fmt.Sprintf(format, args...))
		}
		if m.Submit.Status != 200 || m.Submit.ID == "" {
			c.Unacknowledged++
			unackedIdx[m.I] = true
			if m.Submit.Status != 0 {
				fail(fUnexpectedAns, "submit answered %d", m.Submit.Status)
				v.Problems = append(v.Problems, p)
			}
			continue
		}
		c.Acknowledged++
		acked[m.Submit.ID] = true
		if m.Submit.Tries > 1 {
			c.SubmitRetried++
		}
		c.FinalStates[m.State]++

		// The schedule the message should follow: its earliest possible
		// due time on the client's clock (first request sent + delay), the
		// latest (answer read + delay), and the due_at the server answered.
		sub := m.Submit
		d := effDelayMs(m.DelayMs) * 1000
		earliest, latest, ansDue := sub.SentUs+d, sub.AnsweredUs+d, sub.DueAt
		checkSched := func(name string, call Call, dUs int64) {
			if call.DueAt == 0 {
				fail(fSchedErr, "%s answered 200 without due_at", name)
				return
			}
			due := call.DueAt * 1000
			if due < call.SentUs+dUs-tolUs {
				fail(fSchedErr, "%s due_at %d is %.3f ms before request sent + delay", name, call.DueAt, msF(call.SentUs+dUs-due))
			}
			// The server read its clock before it answered; due_at is in
			// ms, so it may be the answer's ms rounded up, never later.
			if hi := (call.AnsweredUs+999)/1000*1000 + dUs; due > hi {
				fail(fSchedErr, "%s due_at %d is %.3f ms after answer read + delay", name, call.DueAt, msF(due-hi))
			}
			if call.Tries == 1 {
				e := due - (call.SentUs + dUs)
				sched = append(sched, msF(e))
				if e > maxSchedUs {
					fail(fSchedErr, "%s due_at %.3f ms after request sent + delay (bound %v)", name, msF(e), b.MaxSchedErr)
				}
			}
		}
		checkSched("submit", sub, d)

		expect := expectation(&m)
		if a := m.Act; a != nil {
			key := fmt.Sprint(a.Status)
			if a.Status == 0 {
				key = "none"
			}
			if a.Race {
				key = "race " + key
			}
			if a.Kind == kCancel {
				c.CancelAnswers[key]++
				if a.Status != 200 && a.Status != 409 && a.Status != 0 {
					fail(fUnexpectedAns, "cancel answered %d", a.Status)
				}
			} else {
				nd := effDelayMs(a.NewDelayMs) * 1000
				if a.NewDelayMs < 100 {
					key = "overdue " + key
				}
				c.SetDelayAnswers[key]++
				switch a.Status {
				case 200:
					checkSched("setDelay", a.Call, nd)
					earliest, latest, ansDue = a.SentUs+nd, a.AnsweredUs+nd, a.DueAt
				case 409:
				case 0: // it may or may not have been applied
					earliest, latest, ansDue = min(earliest, a.SentUs+nd), max(latest, a.AnsweredUs+nd), 0
				default:
					fail(fUnexpectedAns, "setDelay answered %d", a.Status)
				}
			}
		}

		got := slices.Clone(byID[m.Submit.ID])
		sort.SliceStable(got, func(i, j int) bool { return got[i].ArrivedUs < got[j].ArrivedUs })

		// Duplicates.
		seen := map[int]int{}
		okAt := -1
		for k, cb := range got {
			seen[cb.Attempt]++
			if seen[cb.Attempt] > 1 {
				c.DupCallbacks++
			} else if okAt >= 0 {
				c.AfterSuccess++
			}
			if !cb.Fail && okAt < 0 {
				okAt = k
			}
		}

		// Early and late, every callback.
		for k, cb := range got {
			if cb.DueAt == 0 {
				fail(fEarlyServer, "callback attempt %d without X-Sorakaq-Due-At", cb.Attempt)
				continue
			}
			if e := cb.DueAt*1000 - cb.ArrivedUs; e > 0 {
				v.Late.MaxEarlyS = max(v.Late.MaxEarlyS, msF(e))
				fail(fEarlyServer, "attempt %d arrived %.3f ms before its X-Sorakaq-Due-At", cb.Attempt, msF(e))
			}
			if cb.Attempt <= 1 && ansDue > 0 && cb.ArrivedUs < ansDue*1000 {
				v.Late.MaxEarlyS = max(v.Late.MaxEarlyS, msF(ansDue*1000-cb.ArrivedUs))
				fail(fEarlyServer, "attempt %d arrived %.3f ms before the answered due_at %d", cb.Attempt, msF(ansDue*1000-cb.ArrivedUs), ansDue)
			}
			if e := earliest - cb.ArrivedUs; e > 0 {
				v.Late.MaxEarlyC = max(v.Late.MaxEarlyC, msF(e))
				if e > tolUs {
					fail(fEarlyClient, "attempt %d arrived %.3f ms before request sent + delay", cb.Attempt, msF(e))
				}
			}
			if l := cb.ArrivedUs - cb.DueAt*1000; l > maxLateUs {
				fail(fLate, "attempt %d arrived %.0f ms after its X-Sorakaq-Due-At (bound %v)", cb.Attempt, msF(l), b.MaxLate)
			}
			if k == 0 {
				lateS = append(lateS, msF(cb.ArrivedUs-cb.DueAt*1000))
				lateC = append(lateC, msF(cb.ArrivedUs-earliest))
				if l := cb.ArrivedUs - latest; l > maxLateUs {
					fail(fLate, "first callback arrived %.0f ms after answer read + delay (bound %v)", msF(l), b.MaxLate)
				}
			}
		}

		// The expectation.
		state := m.State
		checkFinal := func(want string) {
			switch {
			case !isFinal(state):
				fail(fNotFinal, "state %q at the end (get answered %d), want %s", state, m.GetStatus, want)
			case state != want:
				fail(fWrongFinal, "state %s, want %s", state, want)
			}
		}
		switch expect {
		case eDelivered:
			c.ExpectDelivered++
			if okAt < 0 {
				fail(fLost, "no successful callback (%d callbacks, state %q)", len(got), state)
			} else {
				c.Delivered++
			}
			checkFinal("delivered")
		case eCancelled:
			c.ExpectCancelled++
			if len(got) > 0 {
				a := m.Act
				when := "after the cancel was answered"
				switch {
				case got[0].ArrivedUs < a.SentUs:
					when = "before the cancel was sent"
				case got[0].ArrivedUs < a.AnsweredUs:
					when = "while the cancel was in flight"
				}
				fail(fCancelViol, "cancel answered 200, yet %d callbacks, the first %s", len(got), when)
			} else if state == "cancelled" {
				c.CancelledOK++
			}
			checkFinal("cancelled")
		case eEither:
			c.ExpectEither++
			switch {
			case okAt >= 0:
				c.Delivered++
				checkFinal("delivered")
			case len(got) == 0 && state == "cancelled":
				c.CancelledOK++
			case len(got) == 0 && isFinal(state):
				fail(fLost, "cancel unanswered, no callback and state %s", state)
			default:
				fail(fLost, "cancel unanswered, no successful callback (%d callbacks, state %q)", len(got), state)
				checkFinal("cancelled")
			}
		case eDead:
			c.ExpectDead++
			if okAt >= 0 {
				fail(fWrongFinal, "a successful callback on the /fail path")
			}
			if len(got) == 0 {
				fail(fLost, "no callback at all (state %q)", state)
			}
			distinct := slices.Sorted(maps.Keys(seen))
			want := make([]int, b.FailAttempts)
			for i := range want {
				want[i] = i + 1
			}
			if len(got) > 0 && !slices.Equal(distinct, want) {
				fail(fDeadAttempts, "attempts seen at the sink %v, want %v", distinct, want)
			}
			if state == "dead" && m.Attempts != b.FailAttempts {
				fail(fDeadAttempts, "dead after %d attempts, want %d", m.Attempts, b.FailAttempts)
			}
			checkFinal("dead")
			if state == "dead" && !slices.Contains(p.Classes, fDeadAttempts) && len(got) > 0 {
				c.DeadOK++
			}
		}
		if len(p.Classes) > 0 {
			v.Problems = append(v.Problems, p)
		}
	}

	// Callbacks of ids no acknowledged submit returned.
	for _, id := range slices.Sorted(maps.Keys(byID)) {
		if acked[id] {
			continue
		}
		cbs := byID[id]
		c.UnknownIDs++
		if unackedIdx[cbs[0].I] {
			c.UnknownOfUnack++ // the client never got an answer: no promise either way
		} else {
			v.Failures[fUnknownID]++
			v.Problems = append(v.Problems, Problem{I: cbs[0].I, ID: id, Classes: []string{fUnknownID},
				Detail: []string{fmt.Sprintf("unknown_id: %d callbacks of an id no acknowledged submit returned (plan index %d)", len(cbs), cbs[0].I)}})
		}
		for _, cb := range cbs {
			if len(v.Unknown) < 100 {
				v.Unknown = append(v.Unknown, cb)
			}
		}
	}
	if n := c.DupCallbacks + c.AfterSuccess; n > b.MaxDup {
		v.Failures[fDuplicates] = n
	}
	if c.Unacknowledged > b.MaxUnacked {
		v.Failures[fUnacked] = c.Unacknowledged
	}
	if c.Acknowledged == 0 {
		v.Failures[fUnacked] = max(v.Failures[fUnacked], c.Unacknowledged, 1) // nothing was checked
	}
	v.Late.Server, v.Late.Client, v.Late.SchedErr = summarize(lateS), summarize(lateC), summarize(sched)
	return v
}
