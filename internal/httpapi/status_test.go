package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/gin-gonic/gin"
	"go.uber.org/zap"

	"github.com/sorakaq/sorakaq/internal/errs"
	"github.com/sorakaq/sorakaq/internal/message"
)

func TestStatus(t *testing.T) {
	notFound := fmt.Errorf("redisstore.Get m1: %w", message.ErrNotFound)
	fe := &message.FieldError{Field: "msg_id", Reason: "is required"}
	for _, tc := range []struct {
		name string
		err  error
		want int
	}{
		{"nil", nil, 200},
		{"plain", errors.New("boom"), 500},
		{"canceled", context.Canceled, 500},
		{"field", fe, 400},
		{"wrapped field", fmt.Errorf("parsing: %w", fe), 400},
		{"batch too large", &message.TooLargeError{FieldError: message.FieldError{Field: "messages", Reason: "has 501 items"}}, 413},
		{"body too large", &http.MaxBytesError{Limit: 10}, 413},
		{"TooLarge", errs.TooLarge, 413},
		{"unauthorized", fmt.Errorf("%w: empty token", errs.Unauthorized), 401},
		{"forbidden", fmt.Errorf("%w: not this topic", errs.Forbidden), 403},
		{"not found", notFound, 404},
		{"topic not found", fmt.Errorf("%w: %q", message.ErrTopicNotFound, "t"), 404},
		{"conflict", fmt.Errorf("%w: already delivered", message.ErrConflict), 409},
		{"unprocessable", fmt.Errorf("%w: key reused", errs.Unprocessable), 422},
		{"too many", errs.E(errs.TooMany, "slow down", nil), 429},
		{"unavailable", errs.E(errs.Unavailable, "reading topic", errors.New("dial tcp: refused")), 503},
		// A cause never changes the status: the store failed while
		// looking for the message, which is not the message missing.
		{"NotFound cause inside Unavailable", errs.E(errs.Unavailable, "reading m1", notFound), 503},
		{"field cause inside Unavailable", errs.E(errs.Unavailable, "", fe), 503},
		{"body too large inside Unavailable", errs.E(errs.Unavailable, "", &http.MaxBytesError{Limit: 10}), 503},
		{"sentinel style with a NotFound second %w", fmt.Errorf("%w: storing failed: %w", message.ErrUnavailable, notFound), 503},
		{"Public of a NotFound", errs.Public(notFound), 404},
		{"Public of a plain error", errs.Public(errors.New("boom")), 503},
		{"Public of canceled", errs.Public(context.Canceled), 503},
	} {
		if got := Status(tc.err); got != tc.want {
			t.Errorf("%s: Status(%v) = %d, want %d", tc.name, tc.err, got, tc.want)
		}
	}
}

// Every kind has its status, and KindOfStatus turns it back.
func TestKindOfStatus(t *testing.T) {
	for k := errs.Internal; k <= errs.Unavailable; k++ {
		st := Status(k)
		if k == errs.Internal {
			st = Status(errors.New("boom"))
		}
		if st < 400 {
			t.Errorf("%v: status %d", k, st)
		}
		want := k
		if k == errs.TopicNotFound {
			want = errs.NotFound
		}
		if got := KindOfStatus(st); got != want {
			t.Errorf("KindOfStatus(%d) = %v, want %v", st, got, want)
		}
	}
	if KindOfStatus(http.StatusTeapot) != errs.Internal || KindOfStatus(http.StatusMisdirectedRequest) != errs.Internal {
		t.Error("a status of no kind is not Internal")
	}
}

// A field error under another kind is answered as that kind: no field,
// and a 503's fixed text (the cause is for the log).
func TestFailByKind(t *testing.T) {
	fe := &message.FieldError{Field: "msg_id", Reason: "is required"}
	for _, tc := range []struct {
		err      error
		st       int
		em       string
		hasField bool
	}{
		{fe, 400, "msg_id: is required", true},
		{errs.E(errs.Unavailable, "the worker said", fe), 503, unavailableText, false},
		{errs.E(errs.Conflict, "was cancelled", nil), 409, "conflict: was cancelled", false},
	} {
		w := httptest.NewRecorder()
		c, _ := gin.CreateTestContext(w)
		c.Request = httptest.NewRequest(http.MethodGet, "/", nil)
		Fail(c, zap.NewNop(), tc.err)
		var env struct {
			EC     int             `json:"ec"`
			EM     string          `json:"em"`
			Result json.RawMessage `json:"result"`
		}
		if err := json.Unmarshal(w.Body.Bytes(), &env); err != nil {
			t.Fatal(err)
		}
		if w.Code != tc.st || env.EC != tc.st || env.EM != tc.em || strings.Contains(string(env.Result), "msg_id") != tc.hasField {
			t.Errorf("%v: %d %s, want %d %q (field %v)", tc.err, w.Code, w.Body, tc.st, tc.em, tc.hasField)
		}
		it := Item(tc.err)
		if it.EC != tc.st || it.EM != tc.em || (it.Field != "") != tc.hasField {
			t.Errorf("Item(%v) = %+v, want %d %q (field %v)", tc.err, it, tc.st, tc.em, tc.hasField)
		}
	}
}
