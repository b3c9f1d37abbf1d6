// Package client is a Go client for sorakaQ's HTTP API (receive, :9088):
// submit delayed messages, cancel them, change their delay, query them.
//
//	c := client.New("http://127.0.0.1:9088")
//	id, err := c.Submit(ctx, client.Message{
//		Topic: "orders", Delay: 10 * time.Second,
//		Callback: client.Callback{Method: "POST", URL: "http://orders.internal/timeout", Params: `{"id":111}`},
//	})
//
// Errors from the server are *APIError; errors.Is(err, client.ErrNotFound)
// and errors.Is(err, client.ErrConflict) tell the common cases apart.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Message is what Submit sends.
type Message struct {
	Topic    string
	Delay    time.Duration // 0..7 days; under 100 ms means at once
	TTR      time.Duration // callback timeout; 0 = the server's default
	Callback Callback
	// IdempotencyKey, when set, makes retrying Submit safe: the server
	// answers a second submit with the same key (per topic) with the
	// message the first one created.
	IdempotencyKey string
	// TraceParent and TraceState, when set, are the W3C Trace Context of
	// the submitting span (headers traceparent and tracestate): sorakaQ
	// keeps them with the message and sends every callback attempt under
	// the same trace id with a span id of its own.
	TraceParent, TraceState string
}

// Callback says how sorakaQ calls back.
type Callback struct {
	Method string // GET or POST
	URL    string
	Params string // POST body, or GET query (a JSON object's fields become query parameters)
	// Headers are sent with every attempt (bounded; the server refuses
	// hop-by-hop, sorakaQ's own and signature headers).
	Headers map[string]string
	// Destination is the flow-control key of the callbacks (messages with
	// the same key share its rate and concurrency limits, Retry-After
	// pauses and breaker); "" is the address the URL dials.
	Destination string
}

// Event is one line of a message's history.
type Event struct {
	At     int64  `json:"at"`
	Type   string `json:"type"`
	Detail string `json:"detail,omitempty"`
}

// Status is a message as the server knows it.
type Status struct {
	ID         string `json:"msg_id"`
	Topic      string `json:"topic_name"`
	DelayMs    int64  `json:"delay_time"`
	TTRMs      int64  `json:"ttr"`
	ReceivedMs int64  `json:"received_at"`
	DueMs      int64  `json:"due_at"`
	State      string `json:"state"` // delayed, delivering, retrying, delivered, dead, cancelled
	Attempts   int    `json:"attempts"`
	LastError  string `json:"last_error"`
	Worker     string `json:"worker"`
	Version    uint64 `json:"version"`
	UpdatedMs  int64  `json:"updated_at"`
	DoneMs     int64  `json:"done_at,omitempty"`
	IdemKey    string `json:"idempotency_key,omitempty"`
	// TraceParent and TraceState are the trace context kept from the
	// submit ("" when it had none).
	TraceParent string `json:"traceparent,omitempty"`
	TraceState  string `json:"tracestate,omitempty"`
	Callback    struct {
		Method      string            `json:"request_type"`
		URL         string            `json:"url"`
		Params      string            `json:"params"`
		Headers     map[string]string `json:"headers,omitempty"`
		Destination string            `json:"destination,omitempty"`
	} `json:"callback"`
	History []Event `json:"history"`
}

// Due is the due time as a time.Time.
func (s *Status) Due() time.Time { return time.UnixMilli(s.DueMs) }

// Page is one page of List.
type Page struct {
	Messages   []Status `json:"messages"`
	NextCursor string   `json:"next_cursor"`
}

// Errors to test with errors.Is.
var (
	ErrNotFound    = errors.New("not found")
	ErrConflict    = errors.New("conflict")
	ErrBadRequest  = errors.New("bad request")
	ErrUnavailable = errors.New("unavailable")
	// ErrUnauthorized is a missing or wrong token (401) or a token not
	// allowed on the topic (403).
	ErrUnauthorized = errors.New("unauthorized")
)

// APIError is an error answer of the server.
type APIError struct {
	Status int    // HTTP status
	EC     int    // the envelope's ec
	EM     string // the envelope's em
	Field  string // for 400: the field at fault
}

func (e *APIError) Error() string { return fmt.Sprintf("sorakaq: %d: %s", e.Status, e.EM) }

// Is maps the status to the error kinds above.
func (e *APIError) Is(target error) bool {
	switch target {
	case ErrNotFound:
		return e.Status == http.StatusNotFound
	case ErrConflict:
		return e.Status == http.StatusConflict
	case ErrBadRequest:
		return e.Status == http.StatusBadRequest || e.Status == http.StatusRequestEntityTooLarge
	case ErrUnavailable:
		return e.Status == http.StatusServiceUnavailable || e.Status == http.StatusTooManyRequests
	case ErrUnauthorized:
		return e.Status == http.StatusUnauthorized || e.Status == http.StatusForbidden
	}
	return false
}

// Client talks to one receive endpoint. Safe for concurrent use.
type Client struct {
	base  string
	hc    *http.Client
	token string // sent as Authorization: Bearer; "" sends none
}

// Option changes a Client.
type Option func(*Client)

// WithHTTPClient uses hc (e.g. with TLS or a different timeout).
func WithHTTPClient(hc *http.Client) Option { return func(c *Client) { c.hc = hc } }

// WithToken sends token as "Authorization: Bearer <token>" with every
// request: one of receive.tokens (or receive.topic_tokens) for the message
// API, admin.api_token for the admin API.
func WithToken(token string) Option { return func(c *Client) { c.token = token } }

// New makes a client for baseURL, e.g. "http://127.0.0.1:9088". The
// default HTTP client keeps connections alive and times out after 10 s.
func New(baseURL string, opts ...Option) *Client {
	c := &Client{
		base: strings.TrimRight(baseURL, "/"),
		hc: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
			MaxIdleConns: 100, MaxIdleConnsPerHost: 100, IdleConnTimeout: 90 * time.Second,
		}},
	}
	for _, o := range opts {
		o(c)
	}
	return c
}

type envelope struct {
	EC     int             `json:"ec"`
	EM     string          `json:"em"`
	Result json.RawMessage `json:"result"`
}

func (c *Client) do(ctx context.Context, method, path string, body any, out any) error {
	return c.doHeaders(ctx, method, path, nil, body, out)
}

func (c *Client) doHeaders(ctx context.Context, method, path string, headers map[string]string, body any, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("sorakaq: encode request: %w", err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return fmt.Errorf("sorakaq: %w", err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("sorakaq: %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("sorakaq: reading answer: %w", err)
	}
	var env envelope
	if err := json.Unmarshal(raw, &env); err != nil {
		return &APIError{Status: resp.StatusCode, EM: fmt.Sprintf("answer is not JSON: %.200s", raw)}
	}
	if resp.StatusCode != http.StatusOK || env.EC != 200 {
		e := &APIError{Status: resp.StatusCode, EC: env.EC, EM: env.EM}
		var fr struct {
			Field string `json:"field"`
		}
		if json.Unmarshal(env.Result, &fr) == nil {
			e.Field = fr.Field
		}
		return e
	}
	if out != nil {
		if err := json.Unmarshal(env.Result, out); err != nil {
			return fmt.Errorf("sorakaq: decode result: %w", err)
		}
	}
	return nil
}

type submitReq struct {
	Topic    string `json:"topic_name"`
	Delay    int64  `json:"delay_time"`
	TTR      *int64 `json:"ttr,omitempty"`
	Callback struct {
		Method      string            `json:"request_type"`
		URL         string            `json:"url"`
		Params      string            `json:"params,omitempty"`
		Headers     map[string]string `json:"headers,omitempty"`
		Destination string            `json:"destination,omitempty"`
	} `json:"callback"`
}

// Submitted is the answer to a submit.
type Submitted struct {
	ID    string `json:"msgId"`
	DueMs int64  `json:"due_at"`
}

func newSubmitReq(m Message) submitReq {
	r := submitReq{Topic: m.Topic, Delay: m.Delay.Milliseconds()}
	if m.TTR > 0 {
		ttr := m.TTR.Milliseconds()
		r.TTR = &ttr
	}
	r.Callback.Method, r.Callback.URL, r.Callback.Params = m.Callback.Method, m.Callback.URL, m.Callback.Params
	r.Callback.Headers, r.Callback.Destination = m.Callback.Headers, m.Callback.Destination
	return r
}

// Submit sends a message; it returns once the server stored it durably.
func (c *Client) Submit(ctx context.Context, m Message) (Submitted, error) {
	r := newSubmitReq(m)
	h := map[string]string{}
	if m.IdempotencyKey != "" {
		h["Idempotency-Key"] = m.IdempotencyKey
	}
	if m.TraceParent != "" {
		h["Traceparent"] = m.TraceParent
	}
	if m.TraceState != "" {
		h["Tracestate"] = m.TraceState
	}
	var out Submitted
	err := c.doHeaders(ctx, http.MethodPost, "/sorakaq/msg/submit", h, r, &out)
	return out, err
}

// BatchResult is one message's outcome in SubmitBatch. Err nil: the
// message is stored (Replayed: its IdempotencyKey named a message stored
// before, whose id and due time these are). Otherwise Err is the
// *APIError a Submit of that message alone would have returned (Status
// is the item's ec), and nothing of it is stored.
type BatchResult struct {
	Submitted
	Replayed bool
	Err      error
}

type batchItem struct {
	submitReq
	IdempotencyKey string `json:"idempotency_key,omitempty"`
	TraceParent    string `json:"traceparent,omitempty"`
	TraceState     string `json:"tracestate,omitempty"`
}

// SubmitBatch sends many messages in one request (at most the server's
// receive.max_batch, 500 by default) and returns their outcomes in the
// same order; the server stores them in one durable write where it can.
// The error is for the whole request (nothing stored: too many messages,
// a wrong token, the server unreachable); a message the server refused
// has its own Err.
func (c *Client) SubmitBatch(ctx context.Context, msgs []Message) ([]BatchResult, error) {
	body := struct {
		Messages []batchItem `json:"messages"`
	}{Messages: make([]batchItem, len(msgs))}
	for i, m := range msgs {
		body.Messages[i] = batchItem{submitReq: newSubmitReq(m), IdempotencyKey: m.IdempotencyKey, TraceParent: m.TraceParent, TraceState: m.TraceState}
	}
	var out struct {
		Results []struct {
			Submitted
			Replayed bool `json:"replayed"`
			Error    *struct {
				EC    int    `json:"ec"`
				EM    string `json:"em"`
				Field string `json:"field"`
			} `json:"error"`
		} `json:"results"`
	}
	if err := c.do(ctx, http.MethodPost, "/sorakaq/msg/submitBatch", body, &out); err != nil {
		return nil, err
	}
	if len(out.Results) != len(msgs) {
		return nil, fmt.Errorf("sorakaq: submitBatch answered %d results for %d messages", len(out.Results), len(msgs))
	}
	res := make([]BatchResult, len(msgs))
	for i, r := range out.Results {
		res[i] = BatchResult{Submitted: r.Submitted, Replayed: r.Replayed}
		if e := r.Error; e != nil {
			res[i] = BatchResult{Err: &APIError{Status: e.EC, EC: e.EC, EM: e.EM, Field: e.Field}}
		}
	}
	return res, nil
}

type ref struct {
	Topic string `json:"topic_name"`
	ID    string `json:"msg_id"`
}

// Cancel cancels a pending message (ErrConflict if it is being or was
// already delivered).
func (c *Client) Cancel(ctx context.Context, topic, id string) error {
	return c.do(ctx, http.MethodPost, "/sorakaq/msg/cancel", ref{topic, id}, nil)
}

// AddTime adds d to a pending message's delay.
func (c *Client) AddTime(ctx context.Context, topic, id string, d time.Duration) error {
	return c.do(ctx, http.MethodPost, "/sorakaq/msg/addTime", struct {
		ref
		Add int64 `json:"add_time"`
	}{ref{topic, id}, d.Milliseconds()}, nil)
}

// SetDelay makes a pending message due d from now (shorter or longer).
// The Status answered has the id, state and new due time only.
func (c *Client) SetDelay(ctx context.Context, topic, id string, d time.Duration) (Status, error) {
	// the server answers {"msgId","state","due_at"}, not a whole message
	var out struct {
		ID    string `json:"msgId"`
		State string `json:"state"`
		DueMs int64  `json:"due_at"`
	}
	err := c.do(ctx, http.MethodPost, "/sorakaq/msg/setDelay", struct {
		ref
		Delay int64 `json:"delay_time"`
	}{ref{topic, id}, d.Milliseconds()}, &out)
	return Status{ID: out.ID, State: out.State, DueMs: out.DueMs}, err
}

// Redrive gives a dead message a new set of attempts, due now.
func (c *Client) Redrive(ctx context.Context, topic, id string) error {
	return c.do(ctx, http.MethodPost, "/sorakaq/msg/redrive", ref{topic, id}, nil)
}

// Delete removes a finished message.
func (c *Client) Delete(ctx context.Context, topic, id string) error {
	return c.do(ctx, http.MethodPost, "/sorakaq/msg/delete", ref{topic, id}, nil)
}

// Get returns a message's state and history.
func (c *Client) Get(ctx context.Context, id string) (Status, error) {
	return c.GetInTopic(ctx, "", id)
}

// GetInTopic is Get for a message that must be in topic ("" for any): a
// topic token (receive.topic_tokens) can read only its topics' messages.
func (c *Client) GetInTopic(ctx context.Context, topic, id string) (Status, error) {
	q := url.Values{"msg_id": {id}}
	if topic != "" {
		q.Set("topic_name", topic)
	}
	var out Status
	err := c.do(ctx, http.MethodGet, "/sorakaq/msg/get?"+q.Encode(), nil, &out)
	return out, err
}

// List returns a page of a topic's messages, optionally in one state
// ("" for all), after cursor ("" for the first page).
func (c *Client) List(ctx context.Context, topic, state, cursor string, limit int) (Page, error) {
	q := url.Values{"topic_name": {topic}}
	if state != "" {
		q.Set("state", state)
	}
	if cursor != "" {
		q.Set("cursor", cursor)
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var out Page
	err := c.do(ctx, http.MethodGet, "/sorakaq/msg/list?"+q.Encode(), nil, &out)
	return out, err
}
