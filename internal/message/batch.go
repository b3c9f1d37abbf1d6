package message

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/sorakaq/sorakaq/internal/errs"
)

// DefaultMaxBatch is the most submits one batch may hold by default
// (config.Default's receive.max_batch).
const DefaultMaxBatch = 500

// BatchRequest is the body of POST /sorakaq/msg/submitBatch. The items
// are kept raw so that each is decoded and judged on its own: one bad item
// is that item's error, not the whole request's.
type BatchRequest struct {
	Messages []json.RawMessage `json:"messages"`
}

// BatchItemRequest is one item of a batch: a submit's fields, and the
// idempotency key the single submit takes from its Idempotency-Key header
// (a batch has one header for many messages). SubmitRequest's fields are
// repeated rather than embedded: encoding/json names a type error in an
// embedded struct "SubmitRequest.delay_time".
type BatchItemRequest struct {
	TopicName      string          `json:"topic_name"`
	DelayTime      *int64          `json:"delay_time"`
	TTR            *int64          `json:"ttr"`
	Callback       *CallbackFields `json:"callback"`
	IdempotencyKey *string         `json:"idempotency_key"`
	// TraceParent and TraceState are the single submit's traceparent and
	// tracestate headers, per item.
	TraceParent string `json:"traceparent"`
	TraceState  string `json:"tracestate"`
}

// BatchItem is one parsed item: its message, or the *FieldError that
// refuses it (its field named from the body: messages[3].callback.url).
type BatchItem struct {
	Msg *Message
	Err error
}

// TooLargeError is a FieldError answered 413 rather than 400: the request
// holds more than it may (a batch over receive.max_batch).
type TooLargeError struct{ FieldError }

func (e *TooLargeError) Unwrap() error { return &e.FieldError }

// ErrorKind makes a TooLargeError errs.TooLarge (413).
func (e *TooLargeError) ErrorKind() errs.Kind { return errs.TooLarge }

// ParseSubmitBatch decodes a batch body and parses each item as
// ParseSubmit parses a submit, all received at nowMs. The error is for the
// whole request (not a JSON object, no items, more than maxItems: nothing
// may be stored); an item's own fault is in its BatchItem.
func ParseSubmitBatch(body []byte, lim Bounds, nowMs int64, maxItems int) ([]BatchItem, error) {
	var r BatchRequest
	if err := DecodeStrict(body, &r); err != nil {
		return nil, err
	}
	if len(r.Messages) == 0 {
		return nil, &FieldError{"messages", fmt.Sprintf("is required: an array of 1 to %d submits", maxItems)}
	}
	if len(r.Messages) > maxItems {
		return nil, &TooLargeError{FieldError{"messages", fmt.Sprintf("has %d items, at most %d (receive.max_batch); split the batch", len(r.Messages), maxItems)}}
	}
	items := make([]BatchItem, len(r.Messages))
	for i, raw := range r.Messages {
		m, err := parseItem(raw, lim, nowMs)
		if err != nil {
			items[i].Err = itemError(i, err)
			continue
		}
		items[i].Msg = m
	}
	return items, nil
}

func parseItem(raw []byte, lim Bounds, nowMs int64) (*Message, error) {
	if bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
		// DecodeStrict would take null as an empty object and answer
		// "topic_name: is required", which hides what is wrong.
		return nil, &FieldError{"body", "must be an object, got null"}
	}
	var r BatchItemRequest
	if err := DecodeStrict(raw, &r); err != nil {
		return nil, err
	}
	m, err := buildSubmit(SubmitRequest{TopicName: r.TopicName, DelayTime: r.DelayTime, TTR: r.TTR, Callback: r.Callback}, lim, nowMs)
	if err != nil {
		return nil, err
	}
	if r.IdempotencyKey != nil {
		if err := ValidateIdemKey("idempotency_key", *r.IdempotencyKey); err != nil {
			return nil, err
		}
		m.IdemKey = *r.IdempotencyKey
	}
	if err := ApplyTrace(m, "traceparent", r.TraceParent, "tracestate", r.TraceState); err != nil {
		return nil, err
	}
	return m, nil
}

// itemError names a field error by the item's place in the body:
// "callback.url" of item 3 is "messages[3].callback.url", the item as a
// whole ("body") is "messages[3]".
func itemError(i int, err error) error {
	var fe *FieldError
	if !errors.As(err, &fe) {
		return err
	}
	field := fmt.Sprintf("messages[%d]", i)
	if fe.Field != "body" {
		field += "." + fe.Field
	}
	return &FieldError{field, fe.Reason}
}
