package app

import (
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/sorakaq/sorakaq/internal/config"
	"github.com/sorakaq/sorakaq/pkg/webhook"
)

// callback.private_networks: auto lets the all-in-one call loopback (its
// first run calls a receiver on the same machine) and the distributed
// mode neither loopback nor private networks; the own ports are those of
// the mode's listeners.
func TestCallbackPrivateNetworksByMode(t *testing.T) {
	c, err := config.Load("")
	if err != nil {
		t.Fatal(err)
	}
	if got := callbackOptions(c); got.PrivateNetworks != "loopback" || !reflect.DeepEqual(got.SelfPorts, []int{9088, 9087}) {
		t.Errorf("all-in-one: private networks %q, own ports %v", got.PrivateNetworks, got.SelfPorts)
	}
	t.Setenv("SORAKAQ_MODE", "distributed")
	if c, err = config.Load(""); err != nil {
		t.Fatal(err)
	}
	if got := callbackOptions(c); got.PrivateNetworks != "deny" || !reflect.DeepEqual(got.SelfPorts, []int{9088, 9087, 9089, 9086}) {
		t.Errorf("distributed: private networks %q, own ports %v", got.PrivateNetworks, got.SelfPorts)
	}
	t.Setenv("SORAKAQ_CALLBACK_PRIVATE_NETWORKS", "allow")
	if c, err = config.Load(""); err != nil || callbackOptions(c).PrivateNetworks != "allow" {
		t.Errorf("explicit allow: %v %v", err, c)
	}
	t.Setenv("SORAKAQ_CALLBACK_PRIVATE_NETWORKS", "sometimes")
	if _, err = config.Load(""); err == nil || !strings.Contains(err.Error(), "callback.private_networks") {
		t.Errorf("a bad value: %v, want an error naming callback.private_networks", err)
	}
}

// callback.signing_secrets from the environment: two secrets give a
// signer (both sign), a bad one stops the load naming it.
func TestSigningSecretsFromEnv(t *testing.T) {
	a, b := webhook.NewSecret([]byte("config-key-a-0123456789")), webhook.NewSecret([]byte("config-key-b-0123456789"))
	t.Setenv("SORAKAQ_CALLBACK_SIGNING_SECRETS", a+","+b)
	c, err := config.Load("")
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Callback.SigningSecrets) != 2 || callbackOptions(c).Signer == nil {
		t.Fatalf("secrets %v, signer %v", c.Callback.SigningSecrets, callbackOptions(c).Signer)
	}
	h := http.Header{}
	if err := callbackOptions(c).Signer.Sign(h, "m", time.Now(), nil); err != nil || len(strings.Fields(h.Get(webhook.HeaderSignature))) != 2 {
		t.Fatalf("signature %q %v: want one per secret", h.Get(webhook.HeaderSignature), err)
	}
	t.Setenv("SORAKAQ_CALLBACK_SIGNING_SECRETS", a+",secret")
	if _, err := config.Load(""); err == nil || !strings.Contains(err.Error(), "callback.signing_secrets[1]") {
		t.Fatalf("a secret without whsec_: %v", err)
	}
	t.Setenv("SORAKAQ_CALLBACK_SIGNING_SECRETS", "")
	if c, err := config.Load(""); err != nil || callbackOptions(c).Signer != nil {
		t.Fatalf("no secrets: %v, signer %v", err, callbackOptions(c).Signer)
	}
}

// callback.topic_signing_secrets from a file: a topic named gets a signer
// of its own; an empty list or a bad secret stops the load naming it.
func TestTopicSigningSecrets(t *testing.T) {
	k := webhook.NewSecret([]byte("orders-key-0123456789"))
	p := filepath.Join(t.TempDir(), "c.yaml")
	os.WriteFile(p, []byte("callback:\n  topic_signing_secrets:\n    - {topic: Orders, secrets: ["+k+"]}\n"), 0o644)
	c, err := config.Load(p)
	if err != nil {
		t.Fatal(err)
	}
	// the topic's case is kept (a map key would be lowercased: "Orders"
	// would then silently be signed with the global secrets)
	if o := callbackOptions(c); o.TopicSigners["Orders"] == nil || len(o.TopicSigners) != 1 || o.Signer != nil {
		t.Fatalf("signers %v, global %v", o.TopicSigners, o.Signer)
	}
	for body, want := range map[string]string{
		"callback:\n  topic_signing_secrets:\n    - {topic: orders, secrets: []}\n":                                             "callback.topic_signing_secrets[0].secrets",
		"callback:\n  topic_signing_secrets:\n    - {topic: orders, secrets: [" + k + ", x]}\n":                                 "callback.topic_signing_secrets[0].secrets[1]",
		"callback:\n  topic_signing_secrets:\n    - {topic: 'a b', secrets: [" + k + "]}\n":                                     "callback.topic_signing_secrets[0].topic",
		"callback:\n  topic_signing_secrets:\n    - {topic: o, secrets: [" + k + "]}\n    - {topic: o, secrets: [" + k + "]}\n": "callback.topic_signing_secrets[1].topic",
	} {
		os.WriteFile(p, []byte(body), 0o644)
		if _, err := config.Load(p); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q loaded with %v; want an error naming %s", body, err, want)
		}
	}
}

// callback.destination: the defaults, an override list from the file, the
// old callback.max_conns_per_host winning when set, and the env.
func TestDestinationOptions(t *testing.T) {
	c, err := config.Load("")
	if err != nil {
		t.Fatal(err)
	}
	d := destinationOptions(c)
	if d.Default.Concurrency != 64 || d.Default.Rate != 0 || d.Breaker.Failures != 0 || d.MaxRetryAfter != 5*time.Minute || d.Overrides != nil {
		t.Fatalf("defaults %+v", d)
	}
	p := filepath.Join(t.TempDir(), "c.yaml")
	os.WriteFile(p, []byte("callback:\n  max_conns_per_host: 8\n  destination:\n    rate: 2.5\n    breaker: {failures: 3, cooldown: 2s}\n"+
		"    overrides:\n      - {key: \"10.0.0.7:443\", rate: 50, concurrency: 4}\n      - {key: tenant-a, burst: 3}\n"), 0o644)
	t.Setenv("SORAKAQ_CALLBACK_DESTINATION_METRICS_TOP", "7")
	c, err = config.Load(p)
	if err != nil {
		t.Fatal(err)
	}
	d = destinationOptions(c)
	if d.Default.Concurrency != 8 || d.Default.Rate != 2.5 || d.Breaker.Failures != 3 || d.Breaker.Cooldown != 2*time.Second || c.Callback.Destination.MetricsTop != 7 {
		t.Fatalf("from the file %+v (metrics_top %d)", d, c.Callback.Destination.MetricsTop)
	}
	if o := d.Overrides["10.0.0.7:443"]; o.Rate != 50 || o.Concurrency != 4 || d.Overrides["tenant-a"].Burst != 3 || len(d.Overrides) != 2 {
		t.Fatalf("overrides %+v", d.Overrides)
	}
}
