package embedded

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"

	"github.com/cockroachdb/pebble/v2"

	"github.com/sorakaq/sorakaq/internal/stats"
)

// statsKey is s/<minute ms BE><node>\x00<topic>.
func statsKey(m stats.Minute) []byte {
	k := binary.BigEndian.AppendUint64([]byte("s/"), uint64(m.Minute))
	k = append(k, m.Node...)
	k = append(k, 0)
	return append(k, m.Topic...)
}

// PutStats stores per-minute figures (overwriting the same minute, node
// and topic). Not synced: losing the last seconds of curves in a crash is
// fine.
func (s *Store) PutStats(_ context.Context, ms []stats.Minute) error {
	release, err := s.guard()
	if err != nil {
		return err
	}
	defer release()
	b := s.db.NewBatch()
	defer b.Close()
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

// Stats returns the minutes in [fromMs, toMs).
func (s *Store) Stats(ctx context.Context, fromMs, toMs int64) ([]stats.Minute, error) {
	release, err := s.guard()
	if err != nil {
		return nil, err
	}
	defer release()
	lo := binary.BigEndian.AppendUint64([]byte("s/"), uint64(fromMs))
	hi := binary.BigEndian.AppendUint64([]byte("s/"), uint64(toMs))
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return nil, fmt.Errorf("embedded.Stats: %w", err)
	}
	defer it.Close()
	var out []stats.Minute
	for ok := it.First(); ok; ok = it.Next() {
		var m stats.Minute
		if err := json.Unmarshal(it.Value(), &m); err != nil {
			return nil, fmt.Errorf("embedded.Stats: %w", err)
		}
		out = append(out, m)
	}
	return out, it.Error()
}

// PurgeStats deletes minutes before beforeMs.
func (s *Store) PurgeStats(_ context.Context, beforeMs int64) error {
	release, err := s.guard()
	if err != nil {
		return err
	}
	defer release()
	return s.db.DeleteRange([]byte("s/"), binary.BigEndian.AppendUint64([]byte("s/"), uint64(beforeMs)), pebble.NoSync)
}
