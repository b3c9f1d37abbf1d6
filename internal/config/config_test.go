package config

import (
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"go.yaml.in/yaml/v3"
)

// Load with nothing set is Default (the host name as node_id): the walk
// that seeds viper loses nothing.
func TestLoadWithoutFileIsDefault(t *testing.T) {
	got, err := Load("")
	if err != nil {
		t.Fatal(err)
	}
	want := Default()
	want.NodeID, _ = os.Hostname()
	if !reflect.DeepEqual(*got, want) {
		t.Fatalf("Load(\"\") differs from Default():\nload    %+v\ndefault %+v", *got, want)
	}
}

// defaultLeaves are Default's keys and values.
func defaultLeaves() map[string]reflect.Value {
	out := map[string]reflect.Value{}
	leaves(reflect.ValueOf(Default()), "", func(k string, v reflect.Value) { out[k] = v })
	return out
}

// The shipped config sets every key, with Default's value, and no other
// key (a commented example is not a key).
func TestShippedConfigIsTheDefaults(t *testing.T) {
	path := filepath.Join("..", "..", "conf", "sorakaq.yaml")
	fromFile, err := Load(path)
	if err != nil {
		t.Fatal(err) // an unknown key is an error here (UnmarshalExact)
	}
	def, err := Load("")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(fromFile, def) {
		t.Fatalf("conf/sorakaq.yaml differs from the defaults:\nfile %+v\ndef  %+v", fromFile, def)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var tree map[string]any
	if err := yaml.Unmarshal(raw, &tree); err != nil {
		t.Fatal(err)
	}
	known := defaultLeaves()
	set := map[string]bool{}
	var walk func(prefix string, m map[string]any)
	walk = func(prefix string, m map[string]any) {
		for k, v := range m {
			key := prefix + k
			if sub, ok := v.(map[string]any); ok && known[key] == (reflect.Value{}) {
				walk(key+".", sub)
				continue
			}
			set[key] = true
		}
	}
	walk("", tree)
	for _, k := range Keys() {
		if !set[k] {
			t.Errorf("conf/sorakaq.yaml does not set %s (every key is shown with its default)", k)
		}
	}
	for k := range set {
		if _, ok := known[k]; !ok {
			t.Errorf("conf/sorakaq.yaml sets %s, which is not a key", k)
		}
	}
}

// docs/config.md has one table row per key (| `key` | default | meaning |)
// whose default is Default's, and no row for a key that does not exist.
func TestDocsListEveryKeyWithItsDefault(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "config.md"))
	if err != nil {
		t.Fatal(err)
	}
	known := defaultLeaves()
	row := regexp.MustCompile("(?m)^\\| `([^`]+)` \\| ([^|]*) \\|")
	lastCode := regexp.MustCompile("`([^`]*)`\\s*$")
	seen := map[string]bool{}
	for _, m := range row.FindAllStringSubmatch(string(doc), -1) {
		key, cell := m[1], strings.TrimSpace(m[2])
		want, ok := known[key]
		switch {
		case !ok:
			t.Errorf("docs/config.md documents %s, which is not a key", key)
			continue
		case seen[key]:
			t.Errorf("docs/config.md documents %s twice", key)
		}
		seen[key] = true
		if key == "node_id" { // Default leaves it empty; Load puts the host name
			if cell != "host name" {
				t.Errorf("docs/config.md: node_id's default is %q, want \"host name\"", cell)
			}
			continue
		}
		code := lastCode.FindStringSubmatch(cell)
		if code == nil {
			t.Errorf("docs/config.md: %s's default %q is not in backquotes", key, cell)
			continue
		}
		got, err := decodeDoc(code[1], want.Type())
		if err != nil {
			t.Errorf("docs/config.md: %s's default %q: %v", key, code[1], err)
			continue
		}
		if !reflect.DeepEqual(got, want.Interface()) {
			t.Errorf("docs/config.md: %s's default is %q (%#v), Default() says %#v", key, code[1], got, want.Interface())
		}
	}
	for _, k := range Keys() {
		if !seen[k] {
			t.Errorf("docs/config.md does not document `%s` (a table row with its default)", k)
		}
	}
}

// decodeDoc reads a default as docs/config.md writes it (YAML: 10s, [],
// "", [1s, 10s]; else as an environment variable would give it:
// [fe80::/10, ::/128] is no YAML) into a value of type t, as Load would.
func decodeDoc(s string, t reflect.Type) (any, error) {
	var raw any
	if err := yaml.Unmarshal([]byte(s), &raw); err != nil {
		raw = s
	}
	out := reflect.New(t)
	dec, err := mapstructure.NewDecoder(&mapstructure.DecoderConfig{
		DecodeHook:       mapstructure.ComposeDecodeHookFunc(mapstructure.StringToTimeDurationHookFunc(), splitStringToSlice),
		WeaklyTypedInput: true, Result: out.Interface(),
	})
	if err != nil {
		return nil, err
	}
	if raw == nil { // "[]" and "{}" are not nil; a bare "" is the empty string
		raw = ""
	}
	if err := dec.Decode(raw); err != nil {
		return nil, err
	}
	v := out.Elem()
	switch { // an empty list or map in the docs is Default's empty one
	case v.Kind() == reflect.Slice && v.IsNil():
		v = reflect.MakeSlice(t, 0, 0)
	case v.Kind() == reflect.Map && v.IsNil():
		v = reflect.MakeMap(t)
	}
	return v.Interface(), nil
}

// Every key can be set from the environment: SORAKAQ_ + the key in upper
// case, '.' as '_' (viper only reads the variable of a key it knows).
func TestEveryKeyFromTheEnvironment(t *testing.T) {
	for _, k := range Keys() {
		t.Setenv("SORAKAQ_"+strings.ToUpper(strings.ReplaceAll(k, ".", "_")), "from-env-"+k)
	}
	all := newViper().AllSettings()
	for _, k := range Keys() {
		var at any = all
		for _, part := range strings.Split(k, ".") {
			m, _ := at.(map[string]any)
			at = m[part]
		}
		if at != "from-env-"+k {
			t.Errorf("%s: %v, want the value of its environment variable", k, at)
		}
	}
}

func TestEnvOverrides(t *testing.T) {
	t.Setenv("SORAKAQ_RECEIVE_LISTEN", "127.0.0.1:1234")
	t.Setenv("SORAKAQ_WORKER_RETRY_BACKOFF", "200ms,3s")
	t.Setenv("SORAKAQ_WORKER_CONCURRENCY", "7")
	t.Setenv("SORAKAQ_RECEIVE_AUTO_CREATE_TOPICS", "false")
	c, err := Load("")
	if err != nil {
		t.Fatal(err)
	}
	if c.Receive.Listen != "127.0.0.1:1234" || c.Worker.Concurrency != 7 || c.Receive.AutoCreateTopics {
		t.Fatalf("env not applied: %+v", c)
	}
	if !reflect.DeepEqual(c.Worker.RetryBackoff, []time.Duration{200 * time.Millisecond, 3 * time.Second}) {
		t.Fatalf("backoff %v", c.Worker.RetryBackoff)
	}
}

func TestBadConfigIsRefusedWithTheKey(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ yaml, want string }{
		{"mode: cluster\n", "mode"},
		{"node_id: w/1\n", "node_id"},
		{"node_id: \"w 1\"\n", "node_id"},
		{"node_id: " + strings.Repeat("w", 129) + "\n", "node_id"},
		{"worker:\n  concurrency: 0\n", "worker.concurrency"},
		{"recieve:\n  listen: x\n", "recieve"},
		{"worker:\n  window: soon\n", "window"},
		{"log:\n  format: xml\n", "log.format"},
		{"http:\n  read_timeout: 0s\n", "http.read_header_timeout/read_timeout/idle_timeout"},
		{"http:\n  trusted_proxies: [my-lb]\n", "http.trusted_proxies[0]"},
		{"receive:\n  topic_tokens:\n    orders: [\"\"]\n", "receive.topic_tokens.orders[0]"},
		{"callback:\n  destination:\n    rate: -1\n", "callback.destination.rate"},
		{"callback:\n  destination:\n    breaker: {cooldown: 10s, max_cooldown: 5s}\n", "callback.destination.breaker.cooldown/max_cooldown"},
		{"callback:\n  destination:\n    overrides: [{key: \"a b\", rate: 1}]\n", "callback.destination.overrides[0].key"},
		{"callback:\n  destination:\n    overrides: [{key: a, rate: 1}, {key: a}]\n", "callback.destination.overrides[1].key"},
		{"callback:\n  destination:\n    overrides: [{key: a, ratee: 1}]\n", "ratee"},
	} {
		p := filepath.Join(dir, "c.yaml")
		os.WriteFile(p, []byte(tc.yaml), 0o644)
		_, err := Load(p)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: want error naming %s, got %v", tc.yaml, tc.want, err)
		}
	}
}

func TestShippedDistributedConfigParses(t *testing.T) {
	c, err := Load(filepath.Join("..", "..", "conf", "distributed.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Mode != "distributed" || c.Redis.Addrs[0] != "127.0.0.1:16379" || c.ZooKeeper.Servers[0] != "127.0.0.1:12181" || c.Kafka.Brokers[0] != "127.0.0.1:19092" {
		t.Fatalf("conf/distributed.yaml does not point at scripts/infra.sh's servers: %+v", c)
	}
}

// Security review §6: a trailing comma in SORAKAQ_RECEIVE_TOKENS made an
// empty token, and an empty token opened every topic (over HTTP/2
// "Authorization: Bearer " arrives with its space). The start is refused
// with the key and the reason.
func TestEmptyTokenIsRefused(t *testing.T) {
	t.Setenv("SORAKAQ_RECEIVE_TOKENS", "secret1,")
	_, err := Load("")
	if err == nil || !strings.Contains(err.Error(), "receive.tokens[1]") || !strings.Contains(err.Error(), "empty") {
		t.Fatalf("SORAKAQ_RECEIVE_TOKENS=secret1, loaded with %v; want an error naming receive.tokens[1]", err)
	}
}

func TestTrustedProxiesFromEnv(t *testing.T) {
	t.Setenv("SORAKAQ_HTTP_TRUSTED_PROXIES", "10.0.0.0/8,192.0.2.7")
	c, err := Load("")
	if err != nil {
		t.Fatal(err)
	}
	if got := c.HTTPOptions().TrustedProxies; !reflect.DeepEqual(got, []string{"10.0.0.0/8", "192.0.2.7"}) {
		t.Fatalf("trusted proxies %v", got)
	}
}

// zookeeper.auth comes from the environment; a malformed one is refused
// naming the key but never showing the value.
func TestZooKeeperAuth(t *testing.T) {
	t.Setenv("SORAKAQ_MODE", "distributed")
	t.Setenv("SORAKAQ_ZOOKEEPER_AUTH", "sorakaq:s3cret:with-colon")
	c, err := Load("")
	if err != nil || c.ZooKeeper.Auth != "sorakaq:s3cret:with-colon" {
		t.Fatalf("SORAKAQ_ZOOKEEPER_AUTH: %+v %v", c, err)
	}
	for _, bad := range []string{"s3cretnocolon", ":s3cret", "sorakaq:"} {
		t.Setenv("SORAKAQ_ZOOKEEPER_AUTH", bad)
		_, err := Load("")
		if err == nil || !strings.Contains(err.Error(), "zookeeper.auth") {
			t.Errorf("zookeeper.auth %q: want an error naming the key, got %v", bad, err)
		} else if strings.Contains(err.Error(), "s3cret") {
			t.Errorf("the error shows the secret: %v", err)
		}
	}
}

// redis.tls: a CA file that is missing or holds no certificate, a
// certificate without its key, or a redis.tls.* key without enabled
// stop the start naming the key.
func TestRedisTLSValidation(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "ca.pem")
	os.WriteFile(notPEM, []byte("not a certificate"), 0o644)
	for _, tc := range []struct{ yaml, want string }{
		{"redis:\n  tls:\n    enabled: true\n    ca_file: /nonexistent/ca.pem\n", "redis.tls.ca_file"},
		{"redis:\n  tls:\n    enabled: true\n    ca_file: " + notPEM + "\n", "redis.tls.ca_file"},
		{"redis:\n  tls:\n    enabled: true\n    cert_file: " + notPEM + "\n", "redis.tls.cert_file/key_file"},
		{"redis:\n  tls:\n    ca_file: " + notPEM + "\n", "redis.tls.enabled"},
	} {
		p := filepath.Join(dir, "c.yaml")
		os.WriteFile(p, []byte("mode: distributed\n"+tc.yaml), 0o644)
		_, err := Load(p)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: want an error naming %s, got %v", tc.yaml, tc.want, err)
		}
	}
	t.Setenv("SORAKAQ_MODE", "distributed")
	t.Setenv("SORAKAQ_REDIS_TLS_ENABLED", "true")
	c, err := Load("")
	if err != nil {
		t.Fatal(err)
	}
	if tc, err := c.RedisTLS(); err != nil || tc == nil || tc.InsecureSkipVerify {
		t.Fatalf("SORAKAQ_REDIS_TLS_ENABLED=true: %+v %v", tc, err)
	}
}

// kafka.sasl and kafka.tls: from the environment; a mechanism sorakaQ
// does not speak, a mechanism without its credential or a credential
// without its mechanism stop the start naming the key, never the value.
func TestKafkaSASLAndTLS(t *testing.T) {
	t.Setenv("SORAKAQ_MODE", "distributed")
	t.Setenv("SORAKAQ_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
	t.Setenv("SORAKAQ_KAFKA_SASL_USERNAME", "sorakaq")
	t.Setenv("SORAKAQ_KAFKA_SASL_PASSWORD", "s3cret")
	t.Setenv("SORAKAQ_KAFKA_TLS_ENABLED", "true")
	c, err := Load("")
	if err != nil {
		t.Fatal(err)
	}
	if c.Kafka.SASL != (KafkaSASL{Mechanism: "SCRAM-SHA-512", Username: "sorakaq", Password: "s3cret"}) {
		t.Fatalf("kafka.sasl from the environment: %+v", c.Kafka.SASL)
	}
	if tc, err := c.KafkaTLS(); err != nil || tc == nil {
		t.Fatalf("kafka.tls.enabled from the environment: %v %v", tc, err)
	}
	for _, tc := range []struct{ mech, user, want string }{
		{"GSSAPI", "sorakaq", "kafka.sasl.mechanism"},
		{"PLAIN", "", "kafka.sasl.username/password"},
		{"", "sorakaq", "kafka.sasl.mechanism"},
	} {
		t.Setenv("SORAKAQ_KAFKA_SASL_MECHANISM", tc.mech)
		t.Setenv("SORAKAQ_KAFKA_SASL_USERNAME", tc.user)
		_, err := Load("")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("mechanism %q user %q: want an error naming %s, got %v", tc.mech, tc.user, tc.want, err)
		} else if strings.Contains(err.Error(), "s3cret") {
			t.Errorf("the error shows the password: %v", err)
		}
	}
	t.Setenv("SORAKAQ_KAFKA_SASL_MECHANISM", "PLAIN")
	t.Setenv("SORAKAQ_KAFKA_SASL_USERNAME", "sorakaq")
	t.Setenv("SORAKAQ_KAFKA_TLS_CA_FILE", "/nonexistent/ca.pem")
	if _, err := Load(""); err == nil || !strings.Contains(err.Error(), "kafka.tls.ca_file") {
		t.Errorf("a missing kafka.tls.ca_file: %v", err)
	}
}

// http.allowed_hosts adds to the host names of sorakaQ's own addresses;
// an entry that is a URL, or a trusted origin with a path, stops the start.
func TestAllowedHostsAndTrustedOrigins(t *testing.T) {
	t.Setenv("SORAKAQ_HTTP_ALLOWED_HOSTS", "sorakaq.example.com,.corp.example")
	t.Setenv("SORAKAQ_RECEIVE_LISTEN", "q.internal:9088")
	t.Setenv("SORAKAQ_WORKER_ADVERTISE", "w1.internal:9089")
	t.Setenv("SORAKAQ_HTTP_TRUSTED_ORIGINS", "https://tools.example.com")
	c, err := Load("")
	if err != nil {
		t.Fatal(err)
	}
	o := c.HTTPOptions()
	for _, h := range []string{"q.internal", "w1.internal", "sorakaq.example.com", ".corp.example"} {
		if !slices.Contains(o.AllowedHosts, h) {
			t.Errorf("allowed hosts %v lack %s", o.AllowedHosts, h)
		}
	}
	if !reflect.DeepEqual(o.TrustedOrigins, []string{"https://tools.example.com"}) {
		t.Errorf("trusted origins %v", o.TrustedOrigins)
	}
	for env, want := range map[string]string{
		"SORAKAQ_HTTP_ALLOWED_HOSTS":   "http.allowed_hosts[1]",
		"SORAKAQ_HTTP_TRUSTED_ORIGINS": "http.trusted_origins[0]",
	} {
		t.Run(env, func(t *testing.T) {
			t.Setenv(env, map[string]string{"SORAKAQ_HTTP_ALLOWED_HOSTS": "ok.example,https://bad.example/",
				"SORAKAQ_HTTP_TRUSTED_ORIGINS": "https://tools.example.com/app"}[env])
			if _, err := Load(""); err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("loaded with %v; want an error naming %s", err, want)
			}
		})
	}
}

// kafka.notice_linger is a duration between 0 and 1s (distributed mode).
func TestNoticeLingerValidation(t *testing.T) {
	dir := t.TempDir()
	for _, v := range []string{"-1ms", "2s"} {
		p := filepath.Join(dir, "c.yaml")
		os.WriteFile(p, []byte("mode: distributed\nkafka:\n  notice_linger: "+v+"\n"), 0o644)
		if _, err := Load(p); err == nil || !strings.Contains(err.Error(), "kafka.notice_linger") {
			t.Errorf("notice_linger %s: want an error naming kafka.notice_linger, got %v", v, err)
		}
	}
	p := filepath.Join(dir, "c.yaml")
	os.WriteFile(p, []byte("mode: distributed\nkafka:\n  notice_linger: 0s\n"), 0o644)
	if c, err := Load(p); err != nil || c.Kafka.NoticeLinger != 0 {
		t.Fatalf("notice_linger 0s: %v %v", c, err)
	}
}
