// Package notice is the hand-over of a stored message in the distributed
// mode, as its three parties share it: the producer (the distributed
// receive backend, internal/receive/routed) stores a message in Redis and
// publishes its Notice on the Kafka topic Topic, many to a record (a
// Batch); the router (internal/center) consumes the records and passes
// each notice to the live holder of its message's slot; the consumer
// (internal/worker, reached through internal/workerapi) schedules the
// message and answers a Result per notice.
//
// A notice is only a hint for punctuality: the message is in Redis before
// its notice exists, and the slot's holder finds it by its sweep when the
// notice is lost. Nothing is ever re-created from a notice.
//
// Decoding rules (rolling upgrades: a newer producer or router may talk to
// an older router or worker, and the other way round):
//   - records and requests are decoded leniently: unknown fields are
//     ignored, so a field added by a newer release reaches an older one
//     as if it were absent (new fields must therefore be optional, with
//     omitempty, and mean nothing when missing);
//   - a record is a Batch ({"notices":[...]}) or, from receives older than
//     batches, a single Notice; Decode reads both;
//   - a notice without a msg_id cannot be routed and is left out (counted).
package notice

import (
	"errors"

	json "github.com/goccy/go-json" // as encoding/json, faster (see message.Encode)

	"github.com/sorakaq/sorakaq/internal/message"
)

// Topic is the one Kafka topic (under kafka.topic_prefix) that carries
// notices of stored messages from receive to the centers, many to a
// record (a Batch, unkeyed: any center may route any notice): a fixed
// topic, so a new sorakaQ topic needs no Kafka topic and no consumer
// rebalance, and its first message is on time.
const Topic = "_notices"

// Notice tells a worker that a message was stored in one of its slots
// (distributed mode: receive → Kafka → center → the slot's holder), with
// the due time and version it was stored at.
type Notice struct {
	ID         string `json:"msg_id"`
	Topic      string `json:"topic_name"`
	DueMs      int64  `json:"due_at"`
	Version    uint64 `json:"version"`
	ReceivedMs int64  `json:"received_at"`
	// TraceParent and TraceState are the trace context of the hop that
	// passed the notice on (tracing.enabled only; else empty): each hop's
	// span is the previous one's child.
	TraceParent string `json:"traceparent,omitempty"`
	TraceState  string `json:"tracestate,omitempty"`
}

// Batch is a Kafka record of notices, {"notices":[...]}, as receive
// publishes them (several to a record, so Kafka's cost is per batch, not
// per message). Receives before it published one Notice per record;
// centers read both (Decode).
type Batch struct {
	Notices []Notice `json:"notices"`
}

// Result says whether a notice was taken: false when the worker does not
// hold the message's slot (the center asks the holder instead).
type Result struct {
	ID    string `json:"msg_id"`
	Taken bool   `json:"taken"`
}

// Of is the notice of a stored message.
func Of(m *message.Message) Notice {
	return Notice{ID: m.ID, Topic: m.Topic, DueMs: m.DueMs, Version: m.Version, ReceivedMs: m.ReceivedMs}
}

// Decode reads a Kafka record of notices: a batch or a single notice
// (see the package doc). A batch's entries without a message id are left
// out and counted in bad; a record that is neither is an error.
func Decode(v []byte) (ns []Notice, bad int, err error) {
	var r struct {
		Notice
		Batch
	}
	if err := json.Unmarshal(v, &r); err != nil {
		return nil, 0, err
	}
	switch {
	case r.Notices != nil && r.ID == "":
		ns = r.Notices[:0]
		for _, n := range r.Notices {
			if n.ID == "" {
				bad++
				continue
			}
			ns = append(ns, n)
		}
		return ns, bad, nil
	case r.Notices == nil && r.ID != "":
		return []Notice{r.Notice}, 0, nil
	}
	return nil, 0, errors.New("neither msg_id (a notice) nor notices (a batch) alone")
}
