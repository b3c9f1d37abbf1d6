package e2e

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sorakaq/sorakaq/internal/testproc"
	"github.com/sorakaq/sorakaq/pkg/webhook"
)

// TestSignedCallbacks: with callback.signing_secrets set, every callback
// (POST with its body, GET with none) carries Standard Webhooks headers
// that a receiver verifies on the raw body with pkg/webhook: one knowing
// only the old secret or only the new one (keys rotating), not one
// knowing neither; the id is the message id. A message's own headers
// (callback.headers) come with it; one that would forge sorakaQ's or the
// signature's is refused at submit.
func TestSignedCallbacks(t *testing.T) {
	t.Parallel()
	oldKey, newKey := webhook.NewSecret([]byte("e2e-old-key-0123456789")), webhook.NewSecret([]byte("e2e-new-key-0123456789"))
	srv := StartServer(t, "SORAKAQ_CALLBACK_SIGNING_SECRETS="+oldKey+","+newKey)
	sink := NewSink(t)
	const topic = "e2e-signed"
	post := srv.Submit(t, SubmitReq{TopicName: topic, DelayTime: 300, Callback: CBField{RequestType: "POST", URL: sink.URL("ok", "signed"), Params: `{"order":"A-1", "amount": 12.5}`,
		Headers: map[string]string{"authorization": "Bearer e2e", "X-Tenant": "t1"}}})
	get := srv.Submit(t, SubmitReq{TopicName: topic, DelayTime: 300, Callback: CBField{RequestType: "GET", URL: sink.URL("ok", "signed"), Params: `{"user":"u1"}`}})
	for _, s := range []Submitted{post, get} {
		c := sink.WaitCalls(t, s.ID, 1, 10*time.Second)[0]
		if s.ID == post.ID && (c.Header.Get("Authorization") != "Bearer e2e" || c.Header.Get("X-Tenant") != "t1") {
			t.Fatalf("the message's own headers did not come: %v", c.Header)
		}
		if got := c.Header.Get(webhook.HeaderID); got != s.ID {
			t.Fatalf("webhook-id %q, want the message id %s", got, s.ID)
		}
		for _, secret := range []string{oldKey, newKey} {
			v, err := webhook.NewVerifier(secret)
			if err != nil {
				t.Fatal(err)
			}
			if err := v.Verify(c.Header, []byte(c.Body)); err != nil {
				t.Fatalf("%s callback of %s: %v (headers %v)", c.Method, s.ID, err, c.Header)
			}
		}
		v, _ := webhook.NewVerifier(webhook.NewSecret([]byte("not-the-key-0123456789")))
		if err := v.Verify(c.Header, []byte(c.Body)); !errors.Is(err, webhook.ErrNoMatch) {
			t.Fatalf("an unknown secret verified: %v", err)
		}
		v, _ = webhook.NewVerifier(newKey)
		if err := v.Verify(c.Header, []byte(c.Body+" ")); !errors.Is(err, webhook.ErrNoMatch) {
			t.Fatalf("a changed body verified: %v", err)
		}
	}
}

func TestReservedCallbackHeaderRefused(t *testing.T) {
	t.Parallel()
	srv := Shared(t)
	for _, name := range []string{"webhook-signature", "X-Sorakaq-Attempt", "Host"} {
		r := srv.Post(t, "/sorakaq/msg/submit", SubmitReq{TopicName: "e2e-signed", DelayTime: 300,
			Callback: CBField{RequestType: "POST", URL: "http://127.0.0.1:9/cb", Headers: map[string]string{name: "forged"}}})
		if r.Status != 400 || !strings.HasPrefix(r.Field(), "callback.headers") {
			t.Fatalf("header %s: %s, want 400 naming callback.headers", name, r)
		}
	}
}

// TestBadSigningSecretStopsTheStart: a secret that is not whsec_ + base64
// of a long enough key is refused at start with the key's name.
func TestBadSigningSecretStopsTheStart(t *testing.T) {
	t.Parallel()
	cmd := exec.Command(binPath, "all")
	cmd.Env = append(testproc.CleanEnv(), "SORAKAQ_DATA_DIR="+t.TempDir(), "SORAKAQ_RECEIVE_LISTEN=127.0.0.1:0",
		"SORAKAQ_ADMIN_LISTEN=127.0.0.1:0", "SORAKAQ_CALLBACK_SIGNING_SECRETS="+webhook.NewSecret([]byte("e2e-good-key-0123456789"))+",whsec_c2hvcnQ=")
	out, _ := cmd.CombinedOutput()
	if code := cmd.ProcessState.ExitCode(); code != 2 || !strings.Contains(string(out), "callback.signing_secrets[1]") {
		t.Fatalf("a short key: exit code %d, want 2 with an error naming callback.signing_secrets[1]\n%s", code, out)
	}
}

// TestTopicSigningSecrets: a topic named in callback.topic_signing_secrets
// is signed with its own secret only (the global one does not verify it,
// so another topic's receiver cannot check or forge it); a topic not named
// is signed with the global one only.
func TestTopicSigningSecrets(t *testing.T) {
	t.Parallel()
	global, orders := webhook.NewSecret([]byte("e2e-global-key-0123456789")), webhook.NewSecret([]byte("e2e-orders-key-0123456789"))
	cfg := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(cfg, []byte("callback:\n  signing_secrets: ["+global+"]\n  topic_signing_secrets:\n    - {topic: E2e-Orders, secrets: ["+orders+"]}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	srv := StartServer(t, "SORAKAQ_CONFIG="+cfg)
	sink := NewSink(t)
	for _, tc := range []struct{ topic, signs, doesNot string }{
		{"E2e-Orders", orders, global}, // a capital letter: the name is kept as written
		{"e2e-other", global, orders},
	} {
		s := srv.Submit(t, SubmitReq{TopicName: tc.topic, DelayTime: 200, Callback: CBField{RequestType: "POST", URL: sink.URL("ok", "signed"), Params: `{"t":"` + tc.topic + `"}`}})
		c := sink.WaitCalls(t, s.ID, 1, 10*time.Second)[0]
		v, _ := webhook.NewVerifier(tc.signs)
		if err := v.Verify(c.Header, []byte(c.Body)); err != nil {
			t.Fatalf("%s: its own secret does not verify: %v", tc.topic, err)
		}
		if n := len(strings.Fields(c.Header.Get(webhook.HeaderSignature))); n != 1 {
			t.Fatalf("%s: %d signatures, want 1", tc.topic, n)
		}
		v, _ = webhook.NewVerifier(tc.doesNot)
		if err := v.Verify(c.Header, []byte(c.Body)); !errors.Is(err, webhook.ErrNoMatch) {
			t.Fatalf("%s: the other secret verified: %v", tc.topic, err)
		}
	}
}
