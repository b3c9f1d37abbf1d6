package redisstore

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/sorakaq/sorakaq/internal/message"
	"github.com/sorakaq/sorakaq/internal/slots"
)

// All key names, schedule members and counter fields are built here.

// keys builds key names. Each slot has its own hash tag, "{<prefix>:<slot>}",
// so that all keys of one slot (its messages, schedule, lease, listings,
// counters, purge index, idempotency keys) hash to one Redis Cluster slot
// and every change of a message stays one MULTI/EXEC, while different
// slots spread over the Cluster's masters. Keys of the whole data set
// (layout marker, stats) have the tag "{<prefix>}" or one of their own.
type keys struct {
	prefix string
	n      int // slot count
}

func newKeys(prefix string, n int) keys { return keys{prefix: prefix, n: n} }

func (k keys) tag(slot int) string { return "{" + k.prefix + ":" + strconv.Itoa(slot) + "}" }

// slot is the slot of a message id.
func (k keys) slot(id string) int { return slots.Of(id, k.n) }

// msg holds the message JSON.
func (k keys) msg(id string) string { return k.tag(k.slot(id)) + ":m:" + id }

// due is the schedule of a slot's pending messages.
func (k keys) due(slot int) string { return k.tag(slot) + ":due" }

// lease is the slot's fencing token: "<epoch>|<node>|<session>", with
// "|released" appended once its holder has let it go.
func (k keys) lease(slot int) string { return k.tag(slot) + ":lease" }

// idem maps a topic's idempotency key to the message that used it; it is
// in the key's slot, where the message's id is chosen to be too.
func (k keys) idem(topic, key string) string {
	return k.tag(slots.OfKey(topic, key, k.n)) + ":i:" + topic + ":" + key
}

// topicAll lists a slot's messages of a topic, every state; topicState
// those in one state (score 0, member id).
func (k keys) topicAll(slot int, topic string) string {
	return k.tag(slot) + ":t:" + topic + ":all"
}

func (k keys) topicState(slot int, topic string, st message.State) string {
	return k.tag(slot) + ":t:" + topic + ":s:" + string(st)
}

// counts is a slot's hash of counters, field = countField(topic, state).
func (k keys) counts(slot int) string { return k.tag(slot) + ":counts" }

// done orders a slot's delivered and cancelled messages by DoneMs (Purge).
func (k keys) done(slot int) string { return k.tag(slot) + ":done" }

// layout records the slot count the data set was created with.
func (k keys) layout() string { return "{" + k.prefix + "}:layout" }

// oldLayout names keys of the single-tag layout of earlier versions.
func (k keys) oldLayout() []string {
	t := "{" + k.prefix + "}"
	return []string{t + ":counts", t + ":unowned", t + ":owners", t + ":done"}
}

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
