package cli

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/sorakaq/sorakaq/pkg/client"
)

// command builds a command: it defines its flags on fs and returns what
// runs once they are parsed (r.pos then holds the arguments).
type command func(r *runner, fs *flag.FlagSet) func(ctx context.Context) error

var commands = map[string]command{
	"msg submit":       msgSubmit,
	"msg get":          msgGet,
	"msg list":         msgList,
	"msg cancel":       msgRef("cancel"),
	"msg redrive":      msgRef("redrive"),
	"msg delete":       msgRef("delete"),
	"msg set-delay":    msgDelay("set-delay"),
	"msg add-time":     msgDelay("add-time"),
	"topic list":       topicList,
	"topic get":        topicGet,
	"topic add":        topicChange(false),
	"topic update":     topicChange(true),
	"instance list":    instanceList,
	"instance online":  instanceOffline(false),
	"instance offline": instanceOffline(true),
}

// parseDuration reads a duration as the API counts it: a bare integer is
// milliseconds (as delay_time is), anything else a Go duration (1.5s,
// 2h30m).
func parseDuration(flagName, s string) (time.Duration, error) {
	if s == "" {
		return 0, usagef("%s: is required", flagName)
	}
	if ms, err := strconv.ParseInt(s, 10, 64); err == nil {
		return time.Duration(ms) * time.Millisecond, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, usagef("%s: %q is no duration (1500 for ms, or 1.5s, 10m, 2h30m)", flagName, s)
	}
	return d, nil
}

// headerFlags collects repeated --header K=V.
type headerFlags map[string]string

func (h headerFlags) String() string { return "" }
func (h headerFlags) Set(v string) error {
	k, val, ok := strings.Cut(v, "=")
	if !ok || k == "" {
		return fmt.Errorf("--header wants NAME=VALUE, got %q", v)
	}
	h[k] = val
	return nil
}

// msgSubmit submits one message, or with --batch a file of them. The
// callback's URL is --callback: --url is the server's, as for every
// command.
func msgSubmit(r *runner, fs *flag.FlagSet) func(context.Context) error {
	topic := fs.String("topic", "", "topic")
	delay := fs.String("delay", "", "delay")
	ttr := fs.String("ttr", "", "callback timeout")
	method := fs.String("method", "POST", "GET or POST")
	cbURL := fs.String("callback", "", "callback URL")
	params := fs.String("params", "", "callback params")
	paramsFile := fs.String("params-file", "", "file with the callback params")
	idem := fs.String("idempotency-key", "", "Idempotency-Key")
	tp := fs.String("traceparent", "", "W3C traceparent")
	ts := fs.String("tracestate", "", "W3C tracestate")
	batch := fs.String("batch", "", "file of submits")
	headers := headerFlags{}
	fs.Var(headers, "header", "callback header NAME=VALUE (repeatable)")
	return func(ctx context.Context) error {
		if err := r.want(0, ""); err != nil {
			return err
		}
		if *batch != "" {
			return r.submitBatch(ctx, *batch)
		}
		if *topic == "" {
			return usagef("--topic: is required")
		}
		if *cbURL == "" {
			return usagef("--callback: is required (the URL sorakaQ calls when the message is due)")
		}
		d, err := parseDuration("--delay", *delay)
		if err != nil {
			return err
		}
		m := client.Message{Topic: *topic, Delay: d, IdempotencyKey: *idem, TraceParent: *tp, TraceState: *ts,
			Callback: client.Callback{Method: strings.ToUpper(*method), URL: *cbURL, Params: *params}}
		if *ttr != "" {
			if m.TTR, err = parseDuration("--ttr", *ttr); err != nil {
				return err
			}
		}
		if *paramsFile != "" {
			if *params != "" {
				return usagef("--params and --params-file: give one")
			}
			b, err := readFile(*paramsFile)
			if err != nil {
				return usagef("--params-file: %v", err)
			}
			m.Callback.Params = string(b)
		}
		if len(headers) > 0 {
			m.Callback.Headers = headers
		}
		s, err := r.client().Submit(ctx, m)
		if err != nil {
			return err
		}
		return r.out(s, func(w io.Writer) { fmt.Fprintf(w, "%s\tdue %s\n", s.ID, fmtMs(s.DueMs)) })
	}
}

func readFile(name string) ([]byte, error) {
	if name == "-" {
		return io.ReadAll(os.Stdin)
	}
	return os.ReadFile(name)
}

// batchLine is one submit of a --batch file, in the API's JSON.
type batchLine struct {
	Topic    string `json:"topic_name"`
	Delay    *int64 `json:"delay_time"`
	TTR      *int64 `json:"ttr"`
	Callback struct {
		Method  string            `json:"request_type"`
		URL     string            `json:"url"`
		Params  string            `json:"params"`
		Headers map[string]string `json:"headers"`
	} `json:"callback"`
	IdempotencyKey string `json:"idempotency_key"`
	TraceParent    string `json:"traceparent"`
	TraceState     string `json:"tracestate"`
}

// readBatch reads a JSON array of submits, {"messages": [...]} as the API
// takes it, or one submit per line.
func readBatch(b []byte) ([]batchLine, error) {
	t := bytes.TrimSpace(b)
	var lines []batchLine
	switch {
	case len(t) == 0:
		return nil, errors.New("is empty")
	case t[0] == '[':
		if err := json.Unmarshal(t, &lines); err != nil {
			return nil, err
		}
	case bytes.HasPrefix(t, []byte(`{"messages"`)):
		var w struct {
			Messages []batchLine `json:"messages"`
		}
		if err := json.Unmarshal(t, &w); err != nil {
			return nil, err
		}
		lines = w.Messages
	default:
		sc := bufio.NewScanner(bytes.NewReader(t))
		sc.Buffer(nil, 4<<20)
		for n := 1; sc.Scan(); n++ {
			l := bytes.TrimSpace(sc.Bytes())
			if len(l) == 0 {
				continue
			}
			var bl batchLine
			if err := json.Unmarshal(l, &bl); err != nil {
				return nil, fmt.Errorf("line %d: %v", n, err)
			}
			lines = append(lines, bl)
		}
		if err := sc.Err(); err != nil {
			return nil, err
		}
	}
	return lines, nil
}

type batchOut struct {
	ID       string `json:"msgId,omitempty"`
	DueMs    int64  `json:"due_at,omitempty"`
	Replayed bool   `json:"replayed,omitempty"`
	Error    *struct {
		EC    int    `json:"ec"`
		EM    string `json:"em"`
		Field string `json:"field,omitempty"`
	} `json:"error,omitempty"`
}

// submitBatch sends a --batch file through SubmitBatch. The exit code is
// 0 only when every item was stored (or replayed); otherwise that of the
// first item in error.
func (r *runner) submitBatch(ctx context.Context, name string) error {
	b, err := readFile(name)
	if err != nil {
		return usagef("--batch: %v", err)
	}
	lines, err := readBatch(b)
	if err != nil {
		return usagef("--batch %s: %v", name, err)
	}
	msgs := make([]client.Message, len(lines))
	for i, l := range lines {
		m := client.Message{Topic: l.Topic, IdempotencyKey: l.IdempotencyKey, TraceParent: l.TraceParent, TraceState: l.TraceState,
			Callback: client.Callback{Method: l.Callback.Method, URL: l.Callback.URL, Params: l.Callback.Params, Headers: l.Callback.Headers}}
		if l.Delay != nil {
			m.Delay = time.Duration(*l.Delay) * time.Millisecond
		}
		if l.TTR != nil {
			m.TTR = time.Duration(*l.TTR) * time.Millisecond
		}
		msgs[i] = m
	}
	res, err := r.client().SubmitBatch(ctx, msgs)
	if err != nil {
		return err
	}
	out := make([]batchOut, len(res))
	var first error
	for i, x := range res {
		if x.Err != nil {
			var ae *client.APIError
			errors.As(x.Err, &ae)
			out[i].Error = &struct {
				EC    int    `json:"ec"`
				EM    string `json:"em"`
				Field string `json:"field,omitempty"`
			}{ae.EC, ae.EM, ae.Field}
			if first == nil {
				first = &itemError{i: i, err: x.Err}
			}
			continue
		}
		out[i] = batchOut{ID: x.ID, DueMs: x.DueMs, Replayed: x.Replayed}
	}
	if err := r.out(map[string]any{"results": out}, func(w io.Writer) {
		for i, o := range out {
			switch {
			case o.Error != nil:
				fmt.Fprintf(w, "%d\terror %d: %s\n", i, o.Error.EC, o.Error.EM)
			case o.Replayed:
				fmt.Fprintf(w, "%d\t%s\tdue %s\treplayed\n", i, o.ID, fmtMs(o.DueMs))
			default:
				fmt.Fprintf(w, "%d\t%s\tdue %s\n", i, o.ID, fmtMs(o.DueMs))
			}
		}
	}); err != nil {
		return err
	}
	return first
}

// itemError is a batch item's error, reported with its place.
type itemError struct {
	i   int
	err error
}

func (e *itemError) Error() string { return fmt.Sprintf("item %d: %v", e.i, e.err) }
func (e *itemError) Unwrap() error { return e.err }

func msgGet(r *runner, fs *flag.FlagSet) func(context.Context) error {
	topic := fs.String("topic", "", "the message's topic (needed with a topic token)")
	return func(ctx context.Context) error {
		if err := r.want(1, "a message id"); err != nil {
			return err
		}
		st, err := r.client().GetInTopic(ctx, *topic, r.pos[0])
		if err != nil {
			return err
		}
		return r.out(st, func(w io.Writer) { printStatus(w, st) })
	}
}

func printStatus(w io.Writer, st client.Status) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	row := func(k, v string) {
		if v != "" {
			fmt.Fprintf(tw, "%s\t%s\n", k, v)
		}
	}
	row("msg_id", st.ID)
	row("topic", st.Topic)
	row("state", st.State)
	row("due_at", fmtMs(st.DueMs))
	row("received_at", fmtMs(st.ReceivedMs))
	row("delay", (time.Duration(st.DelayMs) * time.Millisecond).String())
	row("ttr", (time.Duration(st.TTRMs) * time.Millisecond).String())
	row("attempts", strconv.Itoa(st.Attempts))
	row("last_error", st.LastError)
	row("worker", st.Worker)
	row("callback", st.Callback.Method+" "+st.Callback.URL)
	row("params", st.Callback.Params)
	for k, v := range st.Callback.Headers {
		row("header", k+": "+v)
	}
	row("idempotency_key", st.IdemKey)
	row("traceparent", st.TraceParent)
	row("tracestate", st.TraceState)
	tw.Flush()
	if len(st.History) > 0 {
		fmt.Fprintln(w, "history:")
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		for _, e := range st.History {
			fmt.Fprintf(tw, "  %s\t%s\t%s\n", fmtMs(e.At), e.Type, e.Detail)
		}
		tw.Flush()
	}
}

// fmtMs is a unix-ms time in UTC with milliseconds, or "" for 0.
func fmtMs(ms int64) string {
	if ms == 0 {
		return ""
	}
	return time.UnixMilli(ms).UTC().Format("2006-01-02T15:04:05.000Z")
}

func msgList(r *runner, fs *flag.FlagSet) func(context.Context) error {
	topic := fs.String("topic", "", "topic")
	state := fs.String("state", "", "state")
	limit := fs.Int("limit", 0, "page size")
	cursor := fs.String("cursor", "", "next page's cursor")
	all := fs.Bool("all", false, "every page")
	return func(ctx context.Context) error {
		if err := r.want(0, ""); err != nil {
			return err
		}
		if *topic == "" {
			return usagef("--topic: is required")
		}
		c := r.client()
		page, err := c.List(ctx, *topic, *state, *cursor, *limit)
		if err != nil {
			return err
		}
		for *all && page.NextCursor != "" {
			next, err := c.List(ctx, *topic, *state, page.NextCursor, *limit)
			if err != nil {
				return err
			}
			page.Messages = append(page.Messages, next.Messages...)
			page.NextCursor = next.NextCursor
		}
		if page.Messages == nil {
			page.Messages = []client.Status{}
		}
		return r.out(page, func(w io.Writer) {
			tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "MSG_ID\tSTATE\tDUE_AT\tATTEMPTS\tLAST_ERROR")
			for _, m := range page.Messages {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\n", m.ID, m.State, fmtMs(m.DueMs), m.Attempts, m.LastError)
			}
			tw.Flush()
			if page.NextCursor != "" {
				fmt.Fprintf(r.stderr, "more: --cursor %s (or --all)\n", page.NextCursor)
			}
		})
	}
}

// msgRef is cancel, redrive and delete: a topic and an id.
func msgRef(verb string) command {
	return func(r *runner, fs *flag.FlagSet) func(context.Context) error {
		topic := fs.String("topic", "", "the message's topic")
		return func(ctx context.Context) error {
			if err := r.want(1, "a message id"); err != nil {
				return err
			}
			if *topic == "" {
				return usagef("--topic: is required (the message's topic)")
			}
			c, id := r.client(), r.pos[0]
			var err error
			var done string
			switch verb {
			case "cancel":
				err, done = c.Cancel(ctx, *topic, id), "cancelled"
			case "redrive":
				err, done = c.Redrive(ctx, *topic, id), "redriven"
			case "delete":
				err, done = c.Delete(ctx, *topic, id), "deleted"
			}
			if err != nil {
				return err
			}
			return r.out(true, func(w io.Writer) { fmt.Fprintf(w, "%s %s\n", done, id) })
		}
	}
}

// msgDelay is set-delay and add-time: a topic, an id and a duration.
func msgDelay(verb string) command {
	return func(r *runner, fs *flag.FlagSet) func(context.Context) error {
		topic := fs.String("topic", "", "the message's topic")
		return func(ctx context.Context) error {
			if err := r.want(2, "a message id and a duration"); err != nil {
				return err
			}
			if *topic == "" {
				return usagef("--topic: is required (the message's topic)")
			}
			d, err := parseDuration("duration", r.pos[1])
			if err != nil {
				return err
			}
			c, id := r.client(), r.pos[0]
			if verb == "add-time" {
				if err := c.AddTime(ctx, *topic, id, d); err != nil {
					return err
				}
				return r.out(true, func(w io.Writer) { fmt.Fprintf(w, "%s delayed by %s more\n", id, d) })
			}
			st, err := c.SetDelay(ctx, *topic, id, d)
			if err != nil {
				return err
			}
			res := struct {
				ID    string `json:"msgId"`
				State string `json:"state"`
				DueMs int64  `json:"due_at"`
			}{st.ID, st.State, st.DueMs}
			return r.out(res, func(w io.Writer) { fmt.Fprintf(w, "%s\tdue %s\n", st.ID, fmtMs(st.DueMs)) })
		}
	}
}
