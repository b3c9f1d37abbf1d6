package workerapi

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/sorakaq/sorakaq/internal/errs"
	"github.com/sorakaq/sorakaq/internal/message"
	"github.com/sorakaq/sorakaq/internal/slots"
)

// The client turns each answer's status back into its error kind: the
// kinds the caller acts on keep the worker's words (once), any other
// failure of the worker is unavailable.
func TestClientDecodesAnswersByStatus(t *testing.T) {
	answers := map[string]struct {
		st   int
		body string
	}{
		"/notfound": {404, `{"ec":404,"em":"message not found: no message m1 in topic \"t\""}`},
		"/conflict": {409, `{"ec":409,"em":"conflict: message m1 was cancelled"}`},
		"/field":    {400, `{"ec":400,"em":"msg_id: is required","result":{"field":"msg_id","reason":"is required"}}`},
		"/large":    {413, `{"ec":413,"em":"body: larger than 10 bytes","result":{"field":"body","reason":"larger than 10 bytes"}}`},
		"/owner":    {421, `{"ec":421,"em":"slot 3 is held by worker w2","result":{"slot":3,"owner":"w2"}}`},
		"/secret":   {401, `{"ec":401,"em":"cluster authentication failed"}`},
		"/busy":     {503, `{"ec":503,"em":"service unavailable: retry shortly"}`},
		"/toomany":  {429, `{"ec":429,"em":"too many requests"}`},
		"/bug":      {500, `{"ec":500,"em":"internal error; see the server log"}`},
		"/teapot":   {418, `{"ec":418,"em":"short and stout"}`},
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a := answers[r.URL.Path]
		w.WriteHeader(a.st)
		_, _ = w.Write([]byte(a.body))
	}))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	c := NewClient(5*time.Second, "")
	defer c.Close()
	for _, tc := range []struct {
		path string
		kind errs.Kind
		text string
	}{
		{"/notfound", errs.NotFound, `message not found: no message m1 in topic "t"`},
		{"/conflict", errs.Conflict, "conflict: message m1 was cancelled"},
		{"/field", errs.Invalid, "msg_id: is required"},
		{"/large", errs.Invalid, "body: larger than 10 bytes"},
		{"/owner", errs.Unavailable, "slot 3 is held by worker w2"},
		{"/secret", errs.Unavailable, "service unavailable: worker " + addr + " refused this process: cluster authentication failed"},
		{"/busy", errs.Unavailable, "service unavailable: worker " + addr + ": service unavailable: retry shortly"},
		{"/toomany", errs.Unavailable, "service unavailable: worker " + addr + ": too many requests"},
		{"/bug", errs.Unavailable, "service unavailable: worker " + addr + ": internal error; see the server log"},
		{"/teapot", errs.Unavailable, "service unavailable: worker " + addr + ": short and stout"},
	} {
		err := c.call(context.Background(), addr, tc.path, struct{}{}, nil)
		if errs.KindOf(err) != tc.kind || err.Error() != tc.text {
			t.Errorf("%s: %v (%v), want %v %q", tc.path, err, errs.KindOf(err), tc.kind, tc.text)
		}
	}
	var no *slots.NotOwnerError
	if err := c.call(context.Background(), addr, "/owner", struct{}{}, nil); !errors.As(err, &no) || no.Slot != 3 || no.Owner != "w2" {
		t.Errorf("421: %v, want the NotOwnerError of slot 3 held by w2", err)
	}
	var fe *message.FieldError
	if err := c.call(context.Background(), addr, "/field", struct{}{}, nil); !errors.As(err, &fe) || fe.Field != "msg_id" {
		t.Errorf("400: %v, want a field error naming msg_id", err)
	}
}

// A worker that cannot be reached is unavailable, and the cause is kept:
// a cancelled caller still sees context.Canceled.
func TestClientKeepsTheCause(t *testing.T) {
	c := NewClient(5*time.Second, "")
	defer c.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := c.Cancel(ctx, "127.0.0.1:9", "t", "0123456789abcdefghij")
	if errs.KindOf(err) != errs.Unavailable || !errors.Is(err, context.Canceled) {
		t.Errorf("%v: kind %v, canceled %v; want Unavailable keeping context.Canceled", err, errs.KindOf(err), errors.Is(err, context.Canceled))
	}
}
