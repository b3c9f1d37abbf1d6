// Package tracectx reads, checks and writes W3C Trace Context headers
// (https://www.w3.org/TR/trace-context/): the traceparent a submit carries
// is kept with its message, and every callback attempt is sent under the
// same trace id with a span id of its own. It needs no tracing SDK, so
// carrying a trace costs nothing when OpenTelemetry is off.
package tracectx

import (
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"strings"
)

// Bounds of tracestate: the spec allows at most 32 list members and asks
// that at least 512 characters be propagated; sorakaQ keeps at most that
// much with each message.
const (
	MaxStateMembers = 32
	MaxStateBytes   = 512
)

// Parent is a parsed traceparent.
type Parent struct {
	TraceID [16]byte
	SpanID  [8]byte
	Flags   byte
}

// Sampled says whether the caller recorded its span (flag bit 0).
func (p Parent) Sampled() bool { return p.Flags&1 == 1 }

// String is the version-00 header: 00-<trace-id>-<span-id>-<flags>.
func (p Parent) String() string {
	var b [55]byte
	b[0], b[1], b[2] = '0', '0', '-'
	hex.Encode(b[3:35], p.TraceID[:])
	b[35] = '-'
	hex.Encode(b[36:52], p.SpanID[:])
	b[52] = '-'
	hex.Encode(b[53:55], []byte{p.Flags})
	return string(b[:])
}

// ParseParent checks a traceparent header as the spec's parsing rules have
// it and returns why not (a reason for a 400) when it is no valid one:
// version 00 is exactly 55 characters; a later version at least that, with
// a '-' after the flags if longer (its first four fields are read as 00's,
// and it is sent on as version 00); version ff, upper-case hex and an
// all-zero trace or span id are invalid.
func ParseParent(s string) (Parent, error) {
	var p Parent
	if len(s) < 55 {
		return p, fmt.Errorf("must be 00-<32 hex trace-id>-<16 hex parent-id>-<2 hex flags> (55 characters), got %d characters", len(s))
	}
	if !lowerHex(s[0:2]) {
		return p, fmt.Errorf("version must be 2 lower-case hex digits, got %q", s[0:2])
	}
	if s[0:2] == "ff" {
		return p, fmt.Errorf("version ff is invalid")
	}
	if s[0:2] == "00" && len(s) != 55 {
		return p, fmt.Errorf("version 00 must be exactly 55 characters, got %d", len(s))
	}
	if len(s) > 55 && s[55] != '-' {
		return p, fmt.Errorf("must have '-' after the flags when longer than 55 characters")
	}
	if s[2] != '-' || s[35] != '-' || s[52] != '-' {
		return p, fmt.Errorf("fields must be separated by '-' (00-<trace-id>-<parent-id>-<flags>)")
	}
	if !lowerHex(s[3:35]) {
		return p, fmt.Errorf("trace-id must be 32 lower-case hex digits")
	}
	if !lowerHex(s[36:52]) {
		return p, fmt.Errorf("parent-id must be 16 lower-case hex digits")
	}
	if !lowerHex(s[53:55]) {
		return p, fmt.Errorf("trace-flags must be 2 lower-case hex digits")
	}
	hex.Decode(p.TraceID[:], []byte(s[3:35]))
	hex.Decode(p.SpanID[:], []byte(s[36:52]))
	var f [1]byte
	hex.Decode(f[:], []byte(s[53:55]))
	p.Flags = f[0]
	if p.TraceID == ([16]byte{}) {
		return p, fmt.Errorf("trace-id must not be all zeros")
	}
	if p.SpanID == ([8]byte{}) {
		return p, fmt.Errorf("parent-id must not be all zeros")
	}
	return p, nil
}

func lowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// CheckState checks a tracestate header: at most MaxStateMembers
// comma-separated key=value members (empty ones allowed, as the spec
// has), keys as the spec defines them (lower-case simple keys, or
// tenant@system), values of printable ASCII without ',' or '=' and not
// ending in a space, no key twice, at most MaxStateBytes in all.
func CheckState(s string) error {
	if len(s) > MaxStateBytes {
		return fmt.Errorf("is %d bytes, at most %d", len(s), MaxStateBytes)
	}
	seen := map[string]bool{}
	n := 0
	for _, m := range strings.Split(s, ",") {
		m = strings.Trim(m, " \t")
		if m == "" {
			continue
		}
		n++
		if n > MaxStateMembers {
			return fmt.Errorf("has more than %d members", MaxStateMembers)
		}
		k, v, ok := strings.Cut(m, "=")
		if !ok {
			return fmt.Errorf("member %q is not key=value", m)
		}
		if !validKey(k) {
			return fmt.Errorf("key %q must be lower-case letters, digits and _-*/ starting with a letter (or tenant@system)", k)
		}
		if !validValue(v) {
			return fmt.Errorf("value of %q must be 1-256 printable ASCII characters without ',' or '=', not ending in a space", k)
		}
		if seen[k] {
			return fmt.Errorf("key %q is given twice", k)
		}
		seen[k] = true
	}
	return nil
}

func validKey(k string) bool {
	tenant, system, multi := strings.Cut(k, "@")
	if !multi {
		return len(k) <= 256 && len(k) > 0 && isLowerAlpha(k[0]) && keyChars(k)
	}
	if len(tenant) == 0 || len(tenant) > 241 || len(system) == 0 || len(system) > 14 {
		return false
	}
	return (isLowerAlpha(tenant[0]) || isDigit(tenant[0])) && keyChars(tenant) && isLowerAlpha(system[0]) && keyChars(system)
}

func keyChars(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(isLowerAlpha(c) || isDigit(c) || c == '_' || c == '-' || c == '*' || c == '/') {
			return false
		}
	}
	return true
}

func isLowerAlpha(c byte) bool { return 'a' <= c && c <= 'z' }
func isDigit(c byte) bool      { return '0' <= c && c <= '9' }

func validValue(v string) bool {
	if len(v) == 0 || len(v) > 256 || v[len(v)-1] == ' ' {
		return false
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c < 0x20 || c > 0x7e || c == ',' || c == '=' {
			return false
		}
	}
	return true
}

// NewSpanID is a random, non-zero span id. math/rand/v2's generator is
// seeded per process from the OS and needs no lock: a span id must be
// unique, not secret.
func NewSpanID() [8]byte {
	for {
		var id [8]byte
		v := rand.Uint64()
		for i := range id {
			id[i] = byte(v >> (8 * i))
		}
		if v != 0 {
			return id
		}
	}
}

// Child is the traceparent of a new span under the stored one: the same
// trace id and flags, a fresh span id. "" when stored is empty or not a
// valid traceparent (an old record, or one written by hand).
func Child(stored string) string {
	if stored == "" {
		return ""
	}
	p, err := ParseParent(stored)
	if err != nil {
		return ""
	}
	p.SpanID = NewSpanID()
	return p.String()
}
