package embedded

import (
	"bytes"
	"encoding/binary"
	"io"

	"github.com/cockroachdb/pebble/v2"

	"github.com/sorakaq/sorakaq/internal/message"
)

// All keys are built here.

func msgKey(id string) []byte { return append([]byte("m/"), id...) }

func timeKey(prefix string, ms int64, id string) []byte {
	k := make([]byte, 0, 2+8+len(id))
	k = append(k, prefix...)
	k = binary.BigEndian.AppendUint64(k, uint64(ms))
	return append(k, id...)
}

func dueKey(ms int64, id string) []byte   { return timeKey("d/", ms, id) }
func purgeKey(ms int64, id string) []byte { return timeKey("p/", ms, id) }

func parseDueKey(k []byte) (int64, string) {
	return int64(binary.BigEndian.Uint64(k[2:10])), string(k[10:])
}

func topicStatePrefix(topic string, st message.State) []byte {
	k := append([]byte("t/"), topic...)
	k = append(k, 0)
	k = append(k, st...)
	return append(k, 0)
}

func topicStateKey(topic string, st message.State, id string) []byte {
	return append(topicStatePrefix(topic, st), id...)
}

func topicAllPrefix(topic string) []byte {
	k := append([]byte("a/"), topic...)
	return append(k, 0)
}

func topicAllKey(topic, id string) []byte { return append(topicAllPrefix(topic), id...) }

func idemKey(topic, key string) []byte {
	k := append([]byte("i/"), topic...)
	k = append(k, 0)
	return append(k, key...)
}

func counterKey(topic string, st message.State) []byte {
	k := append([]byte("c/"), topic...)
	k = append(k, 0)
	return append(k, st...)
}

func parseCounterKey(k []byte) (string, message.State, bool) {
	rest := k[2:]
	i := bytes.IndexByte(rest, 0)
	if i < 0 {
		return "", "", false
	}
	return string(rest[:i]), message.State(rest[i+1:]), true
}

// prefixEnd is the smallest key greater than every key with this prefix.
func prefixEnd(prefix []byte) []byte {
	end := append([]byte(nil), prefix...)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}

func encodeInt(n int64) []byte { return binary.BigEndian.AppendUint64(nil, uint64(n)) }

func decodeInt(b []byte) int64 {
	if len(b) != 8 {
		return 0
	}
	return int64(binary.BigEndian.Uint64(b))
}

// counterMerger adds int64 deltas, so counters change in the same batch as
// the message without a read.
var counterMerger = &pebble.Merger{
	Name: "sorakaq.counter.v1",
	Merge: func(key, value []byte) (pebble.ValueMerger, error) {
		return &sumMerger{sum: decodeInt(value)}, nil
	},
}

type sumMerger struct{ sum int64 }

func (m *sumMerger) MergeNewer(v []byte) error { m.sum += decodeInt(v); return nil }
func (m *sumMerger) MergeOlder(v []byte) error { m.sum += decodeInt(v); return nil }
func (m *sumMerger) Finish(bool) ([]byte, io.Closer, error) {
	return encodeInt(m.sum), nil, nil
}
