// Package slots divides the messages of a distributed deployment into a
// fixed number of slots (virtual partitions), the unit of ownership: each
// slot is leased to exactly one live worker at a time, with an epoch that
// grows on every change of holder, and every Redis key of a slot carries
// that slot's hash tag, so a Redis Cluster spreads the slots over its
// masters.
//
// A message's slot is a hash of its id. A submit with an Idempotency-Key
// gets an id chosen to land in the slot of its (topic, key), so that the
// key's record and the message sit in one slot and are written in one
// transaction.
//
// The slot count is fixed when a cluster is created (Redis keeps it; a
// process configured with another count refuses to start).
package slots

import (
	"encoding/json"
	"fmt"
	"hash/fnv"
	"strings"

	"github.com/sorakaq/sorakaq/internal/message"
)

// DefaultCount is the number of slots of a new cluster: enough to spread
// over tens of workers and Redis masters, few enough that a worker scans
// all of its slots' schedules every second at negligible cost.
const DefaultCount = 256

// Of is the slot of a message id among n slots.
func Of(id string, n int) int {
	if n <= 1 {
		return 0
	}
	h := fnv.New32a()
	_, _ = h.Write([]byte(id))
	return int(h.Sum32() % uint32(n))
}

// OfKey is the slot of a topic's idempotency key among n slots.
func OfKey(topic, key string, n int) int {
	return Of(topic+"\x00"+key, n)
}

// NewID returns a new message id whose slot is slot (among n). Ids are
// drawn until one lands there: n draws on average, each a few tens of
// nanoseconds, for keyed submits only.
func NewID(slot, n int) string {
	for {
		id := message.NewID()
		if Of(id, n) == slot {
			return id
		}
	}
}

// NewKeyedID returns a new id for a message with a topic's idempotency
// key: in the key's slot, so the key's record and the message are written
// in one transaction.
func NewKeyedID(topic, key string, n int) string { return NewID(OfKey(topic, key, n), n) }

// Holder names one incarnation of a worker: its node id and the
// ZooKeeper session it registered with, so a restarted worker (same node
// id, new session) is told apart from the process it replaced.
type Holder struct {
	Node    string `json:"node"`
	Session int64  `json:"session"`
}

func (h Holder) String() string { return fmt.Sprintf("%s/0x%x", h.Node, h.Session) }

// ParseHolder reads what String wrote (the zero Holder when it cannot).
func ParseHolder(s string) Holder {
	i := strings.LastIndexByte(s, '/')
	if i < 0 {
		return Holder{}
	}
	var h Holder
	if _, err := fmt.Sscanf(s[i+1:], "0x%x", &h.Session); err != nil {
		return Holder{}
	}
	h.Node = s[:i]
	return h
}

// IsZero reports an unassigned slot.
func (h Holder) IsZero() bool { return h.Node == "" }

// Lease is one slot's assignment: its holder and the epoch at which it got
// the slot. Prev is the holder before, which the new holder waits for
// (until it has released the slot or its session is gone) before it takes
// over.
type Lease struct {
	Holder Holder `json:"holder"`
	Epoch  int64  `json:"epoch"`
	Prev   Holder `json:"prev,omitempty"`
}

// Map is the assignment of every slot, written by the leader center. Gen
// grows with every write; a slot that changes holder gets Gen as its new
// epoch, so epochs only grow.
type Map struct {
	Gen   int64   `json:"gen"`
	Slots []Lease `json:"slots"`
}

// Decode reads a map written by Encode.
func Decode(data []byte) (*Map, error) {
	var m Map
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("slots.Decode: %w", err)
	}
	return &m, nil
}

// Encode writes the map as JSON.
func (m *Map) Encode() []byte {
	b, _ := json.Marshal(m)
	return b
}

// Lease returns slot s's lease (zero when the map does not cover it).
func (m *Map) Lease(s int) Lease {
	if m == nil || s < 0 || s >= len(m.Slots) {
		return Lease{}
	}
	return m.Slots[s]
}

// Held lists the slots a holder has in the map.
func (m *Map) Held(h Holder) []int {
	var out []int
	for s, l := range m.Slots {
		if l.Holder == h {
			out = append(out, s)
		}
	}
	return out
}
