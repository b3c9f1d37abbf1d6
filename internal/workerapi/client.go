package workerapi

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"time"

	json "github.com/goccy/go-json" // as encoding/json, faster (see message.Encode)

	"github.com/sorakaq/sorakaq/internal/destination"
	"github.com/sorakaq/sorakaq/internal/errs"
	"github.com/sorakaq/sorakaq/internal/httpapi"
	"github.com/sorakaq/sorakaq/internal/lifecycle"
	"github.com/sorakaq/sorakaq/internal/message"
	"github.com/sorakaq/sorakaq/internal/notice"
	"github.com/sorakaq/sorakaq/internal/slots"
)

// Client calls workers' internal APIs. One Client serves every worker
// (addresses come from the registry) over one keep-alive pool.
type Client struct {
	hc     *http.Client
	secret []byte
}

// NewClient makes a client that signs its requests with secret ("" signs
// nothing); timeout bounds each call.
func NewClient(timeout time.Duration, secret string) *Client {
	tr := &http.Transport{
		MaxIdleConns:        256,
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     90 * time.Second,
	}
	return &Client{hc: &http.Client{Transport: tr, Timeout: timeout}, secret: []byte(secret)}
}

// Close drops idle connections.
func (c *Client) Close() { c.hc.CloseIdleConnections() }

type envelope struct {
	EC     int             `json:"ec"`
	EM     string          `json:"em"`
	Result json.RawMessage `json:"result"`
}

// call posts req to addr+path and decodes the result into out, turning
// error answers back into error kinds by their status
// (httpapi.KindOfStatus): those the caller can act on as they are, with
// the worker's words, any other one unavailable.
func (c *Client) call(ctx context.Context, addr, path string, req, out any) error {
	body, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("workerapi %s: %w", path, err)
	}
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+path, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("workerapi %s: %w", path, err)
	}
	hr.Header.Set("Content-Type", "application/json")
	if len(c.secret) > 0 {
		hr.Header.Set(HeaderAuth, sign(c.secret, time.Now().UnixMilli(), http.MethodPost, path, body))
	}
	resp, err := c.hc.Do(hr)
	if err != nil {
		return errs.E(errs.Unavailable, fmt.Sprintf("worker %s unreachable", addr), err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return errs.E(errs.Unavailable, fmt.Sprintf("worker %s: reading answer", addr), err)
	}
	var env envelope
	if err := json.Unmarshal(raw, &env); err != nil {
		return fmt.Errorf("%w: worker %s answered %d without an envelope", message.ErrUnavailable, addr, resp.StatusCode)
	}
	switch resp.StatusCode {
	case http.StatusOK:
		if out != nil {
			if err := json.Unmarshal(env.Result, out); err != nil {
				return fmt.Errorf("workerapi %s: decoding result: %w", path, err)
			}
		}
		return nil
	case http.StatusMisdirectedRequest:
		var no NotOwnerResult
		_ = json.Unmarshal(env.Result, &no)
		return &slots.NotOwnerError{Slot: no.Slot, Owner: no.Owner}
	case http.StatusUnauthorized:
		// Not the caller's credentials: this process's cluster secret.
		return errs.E(errs.Unavailable, fmt.Sprintf("worker %s refused this process: %s", addr, env.EM), nil)
	}
	switch k := httpapi.KindOfStatus(resp.StatusCode); {
	case k == errs.Invalid, k == errs.TooLarge:
		var fe struct{ Field, Reason string }
		_ = json.Unmarshal(env.Result, &fe)
		if fe.Field != "" {
			return &message.FieldError{Field: fe.Field, Reason: fe.Reason}
		}
		return &message.FieldError{Field: "body", Reason: env.EM}
	case errs.Actionable(k):
		return errs.E(k, trimKind(env.EM, k), nil)
	}
	return errs.E(errs.Unavailable, fmt.Sprintf("worker %s: %s", addr, env.EM), nil)
}

// trimKind drops the "kind: " prefix the worker put on its message so it
// is not said twice.
func trimKind(em string, kind errs.Kind) string {
	p := kind.Error() + ": "
	if len(em) > len(p) && em[:len(p)] == p {
		return em[len(p):]
	}
	return em
}

// Notify passes notices to the worker at addr.
func (c *Client) Notify(ctx context.Context, addr string, notices []notice.Notice) ([]notice.Result, error) {
	var out []notice.Result
	err := c.call(ctx, addr, PathNotify, NotifyRequest{Notices: notices}, &out)
	return out, err
}

// Cancel asks the owner at addr to cancel a message.
func (c *Client) Cancel(ctx context.Context, addr, topic, id string) (*message.Message, error) {
	var m message.Message
	if err := c.call(ctx, addr, PathCancel, audited(ctx, ControlRequest{Topic: topic, ID: id}), &m); err != nil {
		return nil, err
	}
	return &m, nil
}

// audited adds the bulk audit ctx carries (lifecycle.AuditOf) to r, so
// the holder applies it as the local worker would.
func audited(ctx context.Context, r ControlRequest) ControlRequest {
	a := lifecycle.AuditOf(ctx)
	r.Note, r.IfVersion = a.Note, a.IfVersion
	return r
}

// ChangeDelay asks the owner at addr to move a message's due time.
func (c *Client) ChangeDelay(ctx context.Context, addr, topic, id string, ch lifecycle.DelayChange) (*message.Message, error) {
	var m message.Message
	if err := c.call(ctx, addr, PathChangeDelay, audited(ctx, ControlRequest{Topic: topic, ID: id, AddMs: ch.AddMs, SetMs: ch.SetMs, AtMs: ch.AtMs}), &m); err != nil {
		return nil, err
	}
	return &m, nil
}

// Get reads a message through the worker that holds it, which knows
// whether its callback is in progress.
func (c *Client) Get(ctx context.Context, addr, topic, id string) (*message.Message, error) {
	var m message.Message
	if err := c.call(ctx, addr, PathGet, ControlRequest{Topic: topic, ID: id}, &m); err != nil {
		return nil, err
	}
	return &m, nil
}

// Redrive asks the worker at addr to take and re-drive a dead message.
func (c *Client) Redrive(ctx context.Context, addr, topic, id string) (*message.Message, error) {
	var m message.Message
	if err := c.call(ctx, addr, PathRedrive, audited(ctx, ControlRequest{Topic: topic, ID: id}), &m); err != nil {
		return nil, err
	}
	return &m, nil
}

// Destinations reads the flow-control state of the worker at addr.
func (c *Client) Destinations(ctx context.Context, addr string) ([]destination.State, error) {
	var out []destination.State
	if err := c.call(ctx, addr, PathDestinations, struct{}{}, &out); err != nil {
		return nil, err
	}
	return out, nil
}
