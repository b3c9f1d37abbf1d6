package webhook

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"
)

// The spec's test vector (as in the reference libraries).
const (
	vecSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	vecID     = "msg_p5jXN8AQM9LWM0D4loKWxJek"
	vecSig    = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
)

var (
	vecAt   = time.Unix(1614265330, 0)
	vecBody = []byte(`{"test": 2432232314}`)
)

func at(t time.Time) func() time.Time { return func() time.Time { return t } }

func TestSignMatchesTheSpecVector(t *testing.T) {
	s, err := NewSigner(vecSecret)
	if err != nil {
		t.Fatal(err)
	}
	h := http.Header{}
	if err := s.Sign(h, vecID, vecAt, vecBody); err != nil {
		t.Fatal(err)
	}
	if h.Get(HeaderSignature) != vecSig || h.Get(HeaderID) != vecID || h.Get(HeaderTimestamp) != "1614265330" {
		t.Fatalf("headers %v, want signature %s", h, vecSig)
	}
	v, _ := NewVerifier(vecSecret)
	v.Now = at(vecAt.Add(time.Minute))
	if err := v.Verify(h, vecBody); err != nil {
		t.Fatal(err)
	}
}

// TestRotation: signed with the old and the new secret, a receiver that
// knows either accepts; one that knows neither refuses.
func TestRotation(t *testing.T) {
	old, next, other := NewSecret([]byte("old-key-0123456789")), NewSecret([]byte("new-key-0123456789")), NewSecret([]byte("someone-else-01234"))
	s, err := NewSigner(old, next)
	if err != nil {
		t.Fatal(err)
	}
	h := http.Header{}
	now := time.Unix(1_800_000_000, 0)
	if err := s.Sign(h, "m1", now, []byte("body")); err != nil {
		t.Fatal(err)
	}
	if n := len(strings.Fields(h.Get(HeaderSignature))); n != 2 {
		t.Fatalf("%d signatures, want one per secret: %q", n, h.Get(HeaderSignature))
	}
	for _, secrets := range [][]string{{old}, {next}, {other, next}} {
		v, _ := NewVerifier(secrets...)
		v.Now = at(now)
		if err := v.Verify(h, []byte("body")); err != nil {
			t.Fatalf("a receiver knowing %d secrets: %v", len(secrets), err)
		}
	}
	v, _ := NewVerifier(other)
	v.Now = at(now)
	if err := v.Verify(h, []byte("body")); !errors.Is(err, ErrNoMatch) {
		t.Fatalf("an unknown secret: %v", err)
	}
}

func TestVerifyRefuses(t *testing.T) {
	s, _ := NewSigner(vecSecret)
	now := time.Unix(1_800_000_000, 0)
	signed := func() http.Header {
		h := http.Header{}
		if err := s.Sign(h, "m1", now, []byte(`{"a":1}`)); err != nil {
			t.Fatal(err)
		}
		return h
	}
	v, _ := NewVerifier(vecSecret)
	v.Now = at(now)
	if err := v.Verify(signed(), []byte(`{"a": 1}`)); !errors.Is(err, ErrNoMatch) {
		t.Fatalf("a re-encoded body: %v", err)
	}
	h := signed()
	h.Set(HeaderID, "m2")
	if err := v.Verify(h, []byte(`{"a":1}`)); !errors.Is(err, ErrNoMatch) {
		t.Fatalf("another id: %v", err)
	}
	h = signed()
	h.Del(HeaderSignature)
	if err := v.Verify(h, []byte(`{"a":1}`)); !errors.Is(err, ErrMissingHeaders) {
		t.Fatalf("no signature: %v", err)
	}
	v.Now = at(now.Add(6 * time.Minute))
	if err := v.Verify(signed(), []byte(`{"a":1}`)); !errors.Is(err, ErrBadTimestamp) {
		t.Fatalf("a replay 6 min later: %v", err)
	}
	v.Now = at(now.Add(-6 * time.Minute))
	if err := v.Verify(signed(), []byte(`{"a":1}`)); !errors.Is(err, ErrBadTimestamp) {
		t.Fatalf("from the future: %v", err)
	}
	v.Tolerance = 10 * time.Minute
	if err := v.Verify(signed(), []byte(`{"a":1}`)); err != nil {
		t.Fatalf("within a wider tolerance: %v", err)
	}
}

func TestCheckSecret(t *testing.T) {
	for s, want := range map[string]string{
		"":                                 "whsec_",
		"MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw": "whsec_",
		"whsec_not base64!":                "base64",
		"whsec_c2hvcnQ=":                   "at least 16",
	} {
		if err := CheckSecret(s); err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("%q: %v, want an error about %q", s, err, want)
		}
	}
	if err := CheckSecret(vecSecret); err != nil {
		t.Fatal(err)
	}
	if _, err := NewSigner(); err == nil {
		t.Fatal("a signer without secrets")
	}
}
