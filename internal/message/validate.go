package message

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"reflect"
	"regexp"
	"sort"
	"strings"

	"golang.org/x/net/http/httpguts"

	"github.com/sorakaq/sorakaq/internal/errs"
	"github.com/sorakaq/sorakaq/internal/tracectx"
)

// Delay bounds. Below MinDelayMs a message is called back at once; above
// MaxDelayMs it is refused.
const (
	MinDelayMs = 100
	MaxDelayMs = 7 * 24 * 3600 * 1000
)

// Bounds are the request bounds that config may change (a submit's ttr
// and callback sizes); not to be confused with receive.RateLimits.
type Bounds struct {
	MinTTRMs       int64 // smallest callback timeout accepted
	MaxTTRMs       int64 // largest callback timeout accepted
	DefaultTTRMs   int64 // ttr when the request gives none
	MaxParamsBytes int   // size of callback.params
	MaxURLBytes    int   // size of callback.url
}

// DefaultBounds are the bounds of a default configuration: config.Default
// takes receive.{default,min,max}_ttr_ms, max_params_bytes and
// max_url_bytes from here.
func DefaultBounds() Bounds {
	return Bounds{MinTTRMs: 10, MaxTTRMs: 60_000, DefaultTTRMs: 1000, MaxParamsBytes: 16 << 10, MaxURLBytes: 2048}
}

// FieldError says which field of a request is wrong and why.
type FieldError struct {
	Field  string
	Reason string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Reason }

// ErrorKind makes a FieldError errs.Invalid (400).
func (e *FieldError) ErrorKind() errs.Kind { return errs.Invalid }

// IsFieldError reports whether err is (or wraps) a *FieldError.
func IsFieldError(err error) bool {
	var fe *FieldError
	return errors.As(err, &fe)
}

var (
	topicRe = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)
	idRe    = regexp.MustCompile(`^[0-9a-v]{20}$`)
)

// ValidateTopic checks a topic name: 1-64 of letters, digits, '.', '_' and
// '-', so it is also a valid Kafka topic name once prefixed, but not "."
// or "..": the distributed mode keeps a topic at ZooKeeper path
// topics/<name>, where those are no node names (the all-in-one used to
// accept them, the distributed mode answered 503 forever).
func ValidateTopic(field, name string) error {
	if strings.TrimSpace(name) == "" {
		return &FieldError{field, "is required"}
	}
	if !topicRe.MatchString(name) {
		return &FieldError{field, "must be 1-64 characters of letters, digits, '.', '_' or '-'"}
	}
	if name == "." || name == ".." {
		return &FieldError{field, `must not be "." or ".."`}
	}
	return nil
}

// ValidateID checks the form of a message id.
func ValidateID(field, id string) error {
	if id == "" {
		return &FieldError{field, "is required"}
	}
	if !idRe.MatchString(id) {
		return &FieldError{field, "is not a sorakaQ message id (20 characters of 0-9 and a-v)"}
	}
	return nil
}

// ValidateIdemKey checks an idempotency key: 1-128 printable ASCII
// characters.
func ValidateIdemKey(field, k string) error {
	if len(k) == 0 || len(k) > 128 {
		return &FieldError{field, "must be 1-128 characters"}
	}
	for i := 0; i < len(k); i++ {
		if k[i] < 0x21 || k[i] > 0x7e {
			return &FieldError{field, "must be printable ASCII without spaces"}
		}
	}
	return nil
}

// ValidateDelay checks a delay in ms: 0..7 days. Below 100 ms is accepted
// and means "call back at once".
func ValidateDelay(field string, ms int64) error {
	if ms < 0 {
		return &FieldError{field, "must not be negative"}
	}
	if ms > MaxDelayMs {
		return &FieldError{field, fmt.Sprintf("must be at most %d ms (7 days)", MaxDelayMs)}
	}
	return nil
}

// DecodeStrict decodes one JSON object into v: unknown fields, wrong types,
// trailing data and malformed JSON are FieldErrors naming the field.
func DecodeStrict(body []byte, v any) error {
	if len(bytes.TrimSpace(body)) == 0 {
		return &FieldError{"body", "is empty; send a JSON object"}
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		if strings.HasPrefix(err.Error(), "json: unknown field ") {
			// Go's error has the bare, escaped name: find the key and its
			// path in the body itself.
			if fe := unknownKey(body, reflect.TypeOf(v), ""); fe != nil {
				return fe
			}
		}
		return jsonFieldError(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return &FieldError{"body", "has data after the JSON object"}
	}
	return nil
}

func jsonFieldError(err error) error {
	var te *json.UnmarshalTypeError
	var se *json.SyntaxError
	switch {
	case errors.As(err, &te):
		field := te.Field
		if field == "" {
			field = "body"
		}
		return &FieldError{field, fmt.Sprintf("must be %s, got %s", jsonKind(te.Type.Kind().String()), te.Value)}
	case errors.As(err, &se):
		return &FieldError{"body", fmt.Sprintf("malformed JSON at offset %d: %v", se.Offset, se)}
	case errors.Is(err, io.ErrUnexpectedEOF):
		return &FieldError{"body", "malformed JSON: unexpected end"}
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		name := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
		if name == "" {
			return &FieldError{"body", "has a key with an empty name"}
		}
		return &FieldError{name, "is not a known field"}
	default:
		return &FieldError{"body", "malformed JSON: " + err.Error()}
	}
}

func jsonKind(k string) string {
	switch k {
	case "int64", "int", "int32", "uint64":
		return "an integer"
	case "string":
		return "a string"
	case "struct", "map", "ptr":
		return "an object"
	case "bool":
		return "a boolean"
	case "slice", "array":
		return "an array"
	}
	return k
}

// SubmitRequest is the body of POST /sorakaq/msg/submit.
type SubmitRequest struct {
	TopicName string          `json:"topic_name"`
	DelayTime *int64          `json:"delay_time"`
	TTR       *int64          `json:"ttr"`
	Callback  *CallbackFields `json:"callback"`
}

// CallbackFields is the callback part of a submit.
type CallbackFields struct {
	RequestType string            `json:"request_type"`
	URL         string            `json:"url"`
	Params      string            `json:"params"`
	Headers     map[string]string `json:"headers"`
	Destination string            `json:"destination"`
}

// Bounds of callback.destination, the flow-control key a submit may give
// instead of the callback's host: short, printable, no spaces, so that it
// is safe as a metric label and in logs.
const (
	MaxDestinationBytes = 128
	DestinationPunct    = "-._~:@/"
)

// ValidateDestination checks a destination key (callback.destination, or
// a key in callback.destination.overrides).
func ValidateDestination(field, key string) error {
	if key == "" || len(key) > MaxDestinationBytes {
		return &FieldError{field, fmt.Sprintf("must be 1 to %d characters", MaxDestinationBytes)}
	}
	for i := 0; i < len(key); i++ {
		ch := key[i]
		if ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' || strings.IndexByte(DestinationPunct, ch) >= 0 {
			continue
		}
		return &FieldError{field, fmt.Sprintf("may hold only letters, digits and %s (at most %d)", DestinationPunct, MaxDestinationBytes)}
	}
	return nil
}

// Bounds of callback.headers.
const (
	MaxCallbackHeaders      = 16
	MaxCallbackHeaderBytes  = 4096 // names and values together
	maxCallbackHeaderName   = 64
	maxCallbackHeaderValueB = 1024
)

// reservedHeaders are the names callback.headers may not set: hop-by-hop
// and framing headers (the transport owns them), sorakaQ's own, and the
// signature's (a receiver must be able to trust them).
var reservedHeaders = map[string]bool{
	"Connection": true, "Keep-Alive": true, "Proxy-Authenticate": true, "Proxy-Authorization": true,
	"Proxy-Connection": true, "Te": true, "Trailer": true, "Transfer-Encoding": true, "Upgrade": true,
	"Host": true, "Content-Length": true, "Content-Type": true, "Content-Encoding": true, "Expect": true,
	"User-Agent": true, "Idempotency-Key": true,
	// they change how the answer is read: Go stops decoding gzip once
	// Accept-Encoding is set (a {"result": false} would pass unseen), and a
	// Range makes a 206 of part of the answer
	"Accept-Encoding": true, "Range": true,
	"Webhook-Id": true, "Webhook-Timestamp": true, "Webhook-Signature": true,
	// the trace context of each attempt is sorakaQ's (the submit's
	// traceparent with the attempt's span id)
	"Traceparent": true, "Tracestate": true,
}

// validateHeaders checks callback.headers and returns them with canonical
// names.
func validateHeaders(in map[string]string) (map[string]string, error) {
	if len(in) == 0 {
		return nil, nil
	}
	if len(in) > MaxCallbackHeaders {
		return nil, &FieldError{"callback.headers", fmt.Sprintf("has %d headers, at most %d", len(in), MaxCallbackHeaders)}
	}
	out := make(map[string]string, len(in))
	total := 0
	for name, v := range in {
		field := "callback.headers." + name
		if name == "" || len(name) > maxCallbackHeaderName || !httpguts.ValidHeaderFieldName(name) {
			return nil, &FieldError{"callback.headers", fmt.Sprintf("%q is not a header name (letters, digits and !#$%%&'*+-.^_`|~, at most %d)", name, maxCallbackHeaderName)}
		}
		if len(v) > maxCallbackHeaderValueB || !httpguts.ValidHeaderFieldValue(v) {
			return nil, &FieldError{field, fmt.Sprintf("must be at most %d bytes without control characters", maxCallbackHeaderValueB)}
		}
		if strings.ContainsRune(name, '_') {
			// receivers that map headers to variables (CGI, WSGI, Rack) read
			// X_Sorakaq_Topic as X-Sorakaq-Topic
			return nil, &FieldError{field, "must not contain '_' (servers that map headers to variables read it as '-')"}
		}
		c := http.CanonicalHeaderKey(name)
		if reservedHeaders[c] || strings.HasPrefix(c, "X-Sorakaq-") || strings.HasPrefix(c, "Proxy-") {
			return nil, &FieldError{field, "is set by sorakaQ or the transport and cannot be given"}
		}
		if _, dup := out[c]; dup {
			return nil, &FieldError{field, "is given twice (header names are case-insensitive)"}
		}
		total += len(c) + len(v)
		out[c] = v
	}
	if total > MaxCallbackHeaderBytes {
		return nil, &FieldError{"callback.headers", fmt.Sprintf("hold %d bytes, at most %d", total, MaxCallbackHeaderBytes)}
	}
	return out, nil
}

// ParseSubmit decodes and validates a submit body and builds the message,
// received at nowMs. Nothing about the message is decided elsewhere.
func ParseSubmit(body []byte, lim Bounds, nowMs int64) (*Message, error) {
	var r SubmitRequest
	if err := DecodeStrict(body, &r); err != nil {
		return nil, err
	}
	return buildSubmit(r, lim, nowMs)
}

// buildSubmit validates a decoded submit and builds its message (shared by
// the single and the batch submit, so an item is judged as a submit is).
func buildSubmit(r SubmitRequest, lim Bounds, nowMs int64) (*Message, error) {
	if err := ValidateTopic("topic_name", r.TopicName); err != nil {
		return nil, err
	}
	if r.DelayTime == nil {
		return nil, &FieldError{"delay_time", "is required (milliseconds, 0 to 604800000)"}
	}
	if err := ValidateDelay("delay_time", *r.DelayTime); err != nil {
		return nil, err
	}
	ttr := lim.DefaultTTRMs
	if r.TTR != nil {
		ttr = *r.TTR
		if ttr < lim.MinTTRMs || ttr > lim.MaxTTRMs {
			return nil, &FieldError{"ttr", fmt.Sprintf("must be between %d and %d ms", lim.MinTTRMs, lim.MaxTTRMs)}
		}
	}
	if r.Callback == nil {
		return nil, &FieldError{"callback", "is required"}
	}
	cb, err := validateCallback(*r.Callback, lim)
	if err != nil {
		return nil, err
	}
	delay := *r.DelayTime
	due := nowMs + delay
	if delay < MinDelayMs {
		due = nowMs
	}
	m := &Message{
		ID:         NewID(),
		Topic:      r.TopicName,
		DelayMs:    delay,
		TTRMs:      ttr,
		Callback:   cb,
		ReceivedMs: nowMs,
		DueMs:      due,
		State:      StateDelayed,
		Version:    1,
	}
	m.AddEvent(nowMs, EventSubmitted, fmt.Sprintf("delay %d ms", delay))
	return m, nil
}

// asciiUpper upper-cases ASCII letters only, so "post" is POST but no
// Unicode look-alike is.
func asciiUpper(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'a' <= c && c <= 'z' {
			b[i] = c - 'a' + 'A'
		}
	}
	return string(b)
}

// unknownKey finds the first key (in sorted order, depth first) of a JSON
// object that is no field of type t, following struct-typed fields, and
// names it by its path ("callback.foo"); an empty key is named by the
// object holding it ("body" or "callback": "has a key with an empty name").
// Keys are matched as encoding/json matches them (exactly, else
// case-insensitively). nil when there is no such key.
func unknownKey(raw []byte, t reflect.Type, prefix string) *FieldError {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct {
		return nil
	}
	var obj map[string]json.RawMessage
	if json.NewDecoder(bytes.NewReader(raw)).Decode(&obj) != nil { // the first value only
		return nil
	}
	fields := map[string]reflect.Type{}
	collectFields(t, fields)
	keys := make([]string, 0, len(obj))
	for k := range obj {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		canon := k
		ft, ok := fields[k]
		if !ok {
			for name, typ := range fields {
				if strings.EqualFold(name, k) {
					canon, ft, ok = name, typ, true
					break
				}
			}
		}
		if !ok {
			if k == "" {
				holder := strings.TrimSuffix(prefix, ".")
				if holder == "" {
					holder = "body"
				}
				return &FieldError{holder, "has a key with an empty name"}
			}
			return &FieldError{prefix + k, "is not a known field"}
		}
		if fe := unknownKey(obj[k], ft, prefix+canon+"."); fe != nil {
			return fe
		}
	}
	return nil
}

// collectFields maps the JSON names of t's fields (with embedded structs'
// fields promoted) to their types.
func collectFields(t reflect.Type, into map[string]reflect.Type) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" {
			continue
		}
		if f.Anonymous && name == "" && f.Type.Kind() == reflect.Struct {
			collectFields(f.Type, into)
			continue
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		into[name] = f.Type
	}
}

func validateCallback(c CallbackFields, lim Bounds) (Callback, error) {
	rt := asciiUpper(c.RequestType)
	switch rt {
	case "GET", "POST":
	case "":
		return Callback{}, &FieldError{"callback.request_type", "is required (GET or POST)"}
	default:
		return Callback{}, &FieldError{"callback.request_type", fmt.Sprintf("must be GET or POST, got %q", c.RequestType)}
	}
	if c.URL == "" {
		return Callback{}, &FieldError{"callback.url", "is required"}
	}
	if len(c.URL) > lim.MaxURLBytes {
		return Callback{}, &FieldError{"callback.url", fmt.Sprintf("is longer than %d bytes", lim.MaxURLBytes)}
	}
	u, err := url.Parse(c.URL)
	if err != nil {
		return Callback{}, &FieldError{"callback.url", "is not a URL: " + err.Error()}
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return Callback{}, &FieldError{"callback.url", "must be an absolute http:// or https:// URL"}
	}
	if u.Hostname() == "" {
		return Callback{}, &FieldError{"callback.url", "has no host"}
	}
	if u.User != nil {
		return Callback{}, &FieldError{"callback.url", "must not carry user:password; put credentials in params"}
	}
	if len(c.Params) > lim.MaxParamsBytes {
		return Callback{}, &FieldError{"callback.params", fmt.Sprintf("is larger than %d bytes", lim.MaxParamsBytes)}
	}
	headers, err := validateHeaders(c.Headers)
	if err != nil {
		return Callback{}, err
	}
	if c.Destination != "" {
		if err := ValidateDestination("callback.destination", c.Destination); err != nil {
			return Callback{}, err
		}
	}
	return Callback{RequestType: rt, URL: c.URL, Params: c.Params, Headers: headers, Destination: c.Destination}, nil
}

// ApplyTrace checks a submit's W3C trace context (the traceparent and
// tracestate headers, or a batch item's fields of those names) and keeps
// it with m. A traceparent that is not one is refused, naming the field
// and the rule broken; one of a later version is kept as version 00, as
// the spec asks. A tracestate is kept only beside a traceparent (the spec:
// without a valid traceparent it is not read) and must itself be valid.
func ApplyTrace(m *Message, parentField, parent, stateField, state string) error {
	if parent == "" {
		return nil
	}
	p, err := tracectx.ParseParent(parent)
	if err != nil {
		return &FieldError{parentField, err.Error()}
	}
	state = strings.Trim(state, " \t")
	if state != "" {
		if err := tracectx.CheckState(state); err != nil {
			return &FieldError{stateField, err.Error()}
		}
	}
	if parent[0:2] != "00" {
		parent = p.String()
	}
	m.TraceParent, m.TraceState = parent, state
	return nil
}
