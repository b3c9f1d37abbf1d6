// Package webhook signs and verifies sorakaQ's callbacks in the Standard
// Webhooks format (https://www.standardwebhooks.com): every callback
// carries
//
//	webhook-id:        the message id (the same on every attempt)
//	webhook-timestamp: unix seconds when the attempt was signed
//	webhook-signature: "v1,<base64 HMAC-SHA256>" for each active secret, space-separated
//
// where the HMAC is over "<id>.<timestamp>.<body>" with the secret's key
// (a secret is "whsec_" + base64 of the key). Several secrets are active at
// once so that keys rotate without downtime: sorakaQ signs with each
// configured secret, a receiver accepts a signature by any secret it knows.
//
// A receiver verifies the raw body as it came off the wire, before any
// JSON decoding (re-encoding changes the bytes and breaks the signature):
//
//	v, err := webhook.NewVerifier("whsec_...")
//	body, _ := io.ReadAll(r.Body)
//	if err := v.Verify(r.Header, body); err != nil { http.Error(w, "bad signature", 401); return }
//
// The HMAC itself is the Standard Webhooks reference library's.
package webhook

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
)

// Header names of a signed callback.
const (
	HeaderID        = "webhook-id"
	HeaderTimestamp = "webhook-timestamp"
	HeaderSignature = "webhook-signature"
)

// DefaultTolerance is how far a signature's timestamp may be from the
// receiver's clock (either way) by default: the spec's 5 minutes.
const DefaultTolerance = 5 * time.Minute

// MinKeyBytes is the shortest key a secret may have (the spec suggests 24
// to 64 random bytes).
const MinKeyBytes = 16

// Errors of Verify (wrapped with details).
var (
	ErrMissingHeaders = errors.New("webhook: missing webhook-id, webhook-timestamp or webhook-signature")
	ErrBadTimestamp   = errors.New("webhook: timestamp outside the tolerance")
	ErrNoMatch        = errors.New("webhook: no signature matches")
)

type key struct {
	wh *standardwebhooks.Webhook
}

// parseSecrets checks and decodes "whsec_<base64>" secrets.
func parseSecrets(secrets []string) ([]key, error) {
	if len(secrets) == 0 {
		return nil, errors.New("webhook: no secret given")
	}
	out := make([]key, 0, len(secrets))
	for i, s := range secrets {
		if err := CheckSecret(s); err != nil {
			return nil, fmt.Errorf("secret %d: %w", i+1, err)
		}
		wh, err := standardwebhooks.NewWebhook(s)
		if err != nil {
			return nil, fmt.Errorf("secret %d: %w", i+1, err)
		}
		out = append(out, key{wh})
	}
	return out, nil
}

// CheckSecret says what is wrong with a secret, if anything: it must be
// "whsec_" followed by the standard base64 of at least MinKeyBytes bytes.
func CheckSecret(s string) error {
	b64, ok := strings.CutPrefix(s, "whsec_")
	if !ok {
		return errors.New(`must start with "whsec_" (followed by base64 of the key)`)
	}
	k, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return fmt.Errorf("the part after whsec_ is not standard base64: %w", err)
	}
	if len(k) < MinKeyBytes {
		return fmt.Errorf("the key is %d bytes, at least %d are needed", len(k), MinKeyBytes)
	}
	return nil
}

// Signer signs callbacks with every active secret.
type Signer struct{ keys []key }

// NewSigner makes a signer of the given secrets (in order; receivers may
// know any of them).
func NewSigner(secrets ...string) (*Signer, error) {
	ks, err := parseSecrets(secrets)
	if err != nil {
		return nil, err
	}
	return &Signer{keys: ks}, nil
}

// Sign sets the three headers on h for a callback of message id with body
// at time at.
func (s *Signer) Sign(h http.Header, id string, at time.Time, body []byte) error {
	sigs := make([]string, 0, len(s.keys))
	for _, k := range s.keys {
		sig, err := k.wh.Sign(id, at, body)
		if err != nil {
			return fmt.Errorf("webhook: signing: %w", err)
		}
		sigs = append(sigs, sig)
	}
	h.Set(HeaderID, id)
	h.Set(HeaderTimestamp, strconv.FormatInt(at.Unix(), 10))
	h.Set(HeaderSignature, strings.Join(sigs, " "))
	return nil
}

// Verifier checks signed callbacks against the secrets a receiver knows.
type Verifier struct {
	keys []key
	// Tolerance bounds the timestamp's distance from Now (DefaultTolerance
	// when 0): an older signature is a replay.
	Tolerance time.Duration
	// Now is the receiver's clock (time.Now when nil).
	Now func() time.Time
}

// NewVerifier makes a verifier that accepts a signature by any of secrets.
func NewVerifier(secrets ...string) (*Verifier, error) {
	ks, err := parseSecrets(secrets)
	if err != nil {
		return nil, err
	}
	return &Verifier{keys: ks}, nil
}

// Verify checks that headers carry a valid signature of body (the raw
// bytes received) by one of the verifier's secrets, with a timestamp
// within the tolerance.
func (v *Verifier) Verify(headers http.Header, body []byte) error {
	id, ts, sig := headers.Get(HeaderID), headers.Get(HeaderTimestamp), headers.Get(HeaderSignature)
	if id == "" || ts == "" || sig == "" {
		return ErrMissingHeaders
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return fmt.Errorf("%w: %q is not unix seconds", ErrBadTimestamp, ts)
	}
	now := time.Now
	if v.Now != nil {
		now = v.Now
	}
	tol := v.Tolerance
	if tol <= 0 {
		tol = DefaultTolerance
	}
	if d := now().Sub(time.Unix(sec, 0)); d > tol || d < -tol {
		return fmt.Errorf("%w: signed %v from now (tolerance %v)", ErrBadTimestamp, -d.Round(time.Second), tol)
	}
	for _, k := range v.keys {
		// the timestamp is checked above with this verifier's tolerance
		if k.wh.VerifyIgnoringTimestamp(body, headers) == nil {
			return nil
		}
	}
	return ErrNoMatch
}

// NewSecret formats key as a secret ("whsec_" + base64).
func NewSecret(key []byte) string { return "whsec_" + base64.StdEncoding.EncodeToString(key) }
