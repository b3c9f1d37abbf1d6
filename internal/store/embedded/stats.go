package embedded

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/sorakaq/sorakaq/internal/stats"
)

// Stats records are keyed topic first, so that a chart reads one
// contiguous range of its topic (or of the all-topics sums):
//
//	h/<span><topic>\x00<bucket ms BE><run ms BE><node>
//
// with span 'm' (minutes) or 't' (ten minutes). The layout before them,
// s/<minute><node>\x00<topic>, is deleted at the first write.
func statsPrefix(span int64, topic string) []byte {
	c := byte('m')
	if span == stats.TenMinMs {
		c = 't'
	}
	k := append([]byte{'h', '/', c}, topic...)
	return append(k, 0)
}

func statsKey(m stats.Minute) []byte {
	k := binary.BigEndian.AppendUint64(statsPrefix(m.Span, m.Topic), uint64(m.Minute))
	k = binary.BigEndian.AppendUint64(k, uint64(m.Run))
	return append(k, m.Node...)
}

// statsRetention is how long records of a span are kept.
func statsRetention(span int64) time.Duration {
	if span == stats.TenMinMs {
		return stats.TenMinRetention
	}
	return stats.MinuteRetention
}

// PutStats stores records (overwriting the same span, bucket, topic, run
// and node). Not synced: losing the last seconds of curves in a crash is
// fine. Each (span, topic) has its records past retention deleted at most
// once an hour, as it is written: memory and disk stay bounded by
// retention × topics × runs.
func (s *Store) PutStats(_ context.Context, ms []stats.Minute) error {
	release, err := s.guard()
	if err != nil {
		return err
	}
	defer release()
	b := s.db.NewBatch()
	defer b.Close()
	now := time.Now()
	s.statsMu.Lock()
	if s.statsPurged == nil {
		s.statsPurged = map[string]time.Time{}
		// the previous layout: every key from "s/" up to "s0"
		if err := b.DeleteRange([]byte("s/"), []byte("s0"), nil); err != nil {
			s.statsMu.Unlock()
			return fmt.Errorf("embedded.PutStats: %w", err)
		}
	}
	for _, m := range ms {
		p := statsPrefix(m.Span, m.Topic)
		if last, ok := s.statsPurged[string(p)]; !ok || now.Sub(last) > time.Hour {
			s.statsPurged[string(p)] = now
			before := now.Add(-statsRetention(m.Span)).UnixMilli()
			if err := b.DeleteRange(p, binary.BigEndian.AppendUint64(append([]byte(nil), p...), uint64(before)), nil); err != nil {
				s.statsMu.Unlock()
				return fmt.Errorf("embedded.PutStats: %w", err)
			}
		}
	}
	s.statsMu.Unlock()
	for _, m := range ms {
		v, err := json.Marshal(m)
		if err != nil {
			return fmt.Errorf("embedded.PutStats: %w", err)
		}
		if err := b.Set(statsKey(m), v, nil); err != nil {
			return fmt.Errorf("embedded.PutStats: %w", err)
		}
	}
	return b.Commit(pebble.NoSync)
}

// ReadStats returns the records of q's topics and span whose bucket
// starts in [q.FromMs, q.ToMs): one range read per topic.
func (s *Store) ReadStats(ctx context.Context, q stats.Query) ([]stats.Minute, error) {
	release, err := s.guard()
	if err != nil {
		return nil, err
	}
	defer release()
	var out []stats.Minute
	for _, topic := range q.Topics {
		p := statsPrefix(q.Span, topic)
		lo := binary.BigEndian.AppendUint64(append([]byte(nil), p...), uint64(max(0, q.FromMs)))
		hi := binary.BigEndian.AppendUint64(append([]byte(nil), p...), uint64(max(0, q.ToMs)))
		it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
		if err != nil {
			return nil, fmt.Errorf("embedded.ReadStats: %w", err)
		}
		for ok := it.First(); ok; ok = it.Next() {
			var m stats.Minute
			if err := json.Unmarshal(it.Value(), &m); err != nil {
				it.Close()
				return nil, fmt.Errorf("embedded.ReadStats: %w", err)
			}
			out = append(out, m)
		}
		err = it.Error()
		it.Close()
		if err != nil {
			return nil, fmt.Errorf("embedded.ReadStats: %w", err)
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
	}
	return out, nil
}
