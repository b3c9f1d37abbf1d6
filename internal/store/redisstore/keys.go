package redisstore

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/sorakaq/sorakaq/internal/message"
)

// All key names, schedule members and counter fields are built here.

// keys builds key names under one hash tag, "{<prefix>}", so that every key
// of a store hashes to the same Redis Cluster slot.
type keys struct{ tag string }

func newKeys(prefix string) keys { return keys{tag: "{" + prefix + "}"} }

// msg holds the message JSON.
func (k keys) msg(id string) string { return k.tag + ":m:" + id }

// due is the schedule of an owner's pending messages; the messages no
// worker holds yet have their own fixed name.
func (k keys) due(owner string) string {
	if owner == "" {
		return k.tag + ":unowned"
	}
	return k.tag + ":due:" + owner
}

// owners is the set of workers that have (or had) a schedule; Owners
// prunes the ones whose schedule is empty.
func (k keys) owners() string { return k.tag + ":owners" }

// idem maps a topic's idempotency key to the message that used it.
func (k keys) idem(topic, key string) string { return k.tag + ":i:" + topic + ":" + key }

// topicAll lists every message of a topic; topicState those in one state.
func (k keys) topicAll(topic string) string { return k.tag + ":t:" + topic + ":all" }

func (k keys) topicState(topic string, st message.State) string {
	return k.tag + ":t:" + topic + ":s:" + string(st)
}

// counts is the hash of counters, field = countField(topic, state).
func (k keys) counts() string { return k.tag + ":counts" }

// done orders delivered and cancelled messages by DoneMs, for Purge.
func (k keys) done() string { return k.tag + ":done" }

func countField(topic string, st message.State) string { return topic + "\x00" + string(st) }

func parseCountField(f string) (string, message.State, bool) {
	topic, st, ok := strings.Cut(f, "\x00")
	return topic, message.State(st), ok
}

// A schedule member is "<due ms, 16 hex digits><id>\x00<version>" in a
// sorted set whose scores are all 0: lexicographic order is then (due, id)
// order, a cursor (due, id) is a single lexicographic bound, and the
// version comes with the entry without a second read. The id ends with
// \x00 (which ids never contain) so that an id sorts before ids it
// is a prefix of, as in string order.
const dueHexLen = 16

func dueHex(ms int64) string { return fmt.Sprintf("%016x", uint64(ms)) }

func dueMember(ms int64, id string, version uint64) string {
	return dueHex(ms) + id + "\x00" + strconv.FormatUint(version, 10)
}

func parseDueMember(s string) (ms int64, id string, version uint64, err error) {
	if len(s) < dueHexLen+2 {
		return 0, "", 0, fmt.Errorf("bad schedule member %q", s)
	}
	u, err := strconv.ParseUint(s[:dueHexLen], 16, 64)
	if err != nil {
		return 0, "", 0, fmt.Errorf("bad schedule member %q: %w", s, err)
	}
	rest := s[dueHexLen:]
	i := strings.LastIndexByte(rest, 0)
	if i < 0 {
		return 0, "", 0, fmt.Errorf("bad schedule member %q", s)
	}
	v, err := strconv.ParseUint(rest[i+1:], 10, 64)
	if err != nil {
		return 0, "", 0, fmt.Errorf("bad schedule member %q: %w", s, err)
	}
	return int64(u), rest[:i], v, nil
}

// dueLower is the ZRANGE BYLEX lower bound of the entries after a cursor:
// from ms inclusive when id is "", else strictly after (ms, id) whatever the
// cursor's version (every member of (ms, id) is below "<ms><id>\x01", every
// member of a later id at ms is at or above it).
func dueLower(ms int64, id string) string {
	if id == "" {
		return "[" + dueHex(ms)
	}
	return "[" + dueHex(ms) + id + "\x01"
}

// dueUpper is the exclusive bound of entries due before ms.
func dueUpper(ms int64) string { return "(" + dueHex(ms) }
