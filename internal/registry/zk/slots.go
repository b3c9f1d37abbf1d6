package zk

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	zk "github.com/sorakaq/sorakaq/internal/registry/zk/internal/gozk"
)

var (
	// ErrNotLeader: a write fenced on a leader epoch failed because
	// another leader was elected since (leader-epoch has a newer version).
	ErrNotLeader = errors.New("not the leader any more: a newer leader epoch exists")
	// ErrSlotMapChanged: the slot map is not at the version the write was
	// based on (someone wrote it since, or it exists / does not exist).
	ErrSlotMapChanged = errors.New("slot map changed since it was read")
)

// SlotMap is one version of <root>/slots. Version is the znode's
// Stat.Version (-1 and nil Data when the node does not exist).
type SlotMap struct {
	Data    []byte
	Version int32
}

func (r *Registry) slotsPath() string { return r.root + "/slots" }

// ReadSlotMap reads the slot map: its bytes (opaque here; the slot
// package's JSON) and version, to be passed to WriteSlotMap. version is -1
// and data nil when it was never written.
func (r *Registry) ReadSlotMap(ctx context.Context) (data []byte, version int32, err error) {
	var st *zk.Stat
	err = r.do(ctx, func() error {
		var e error
		data, st, e = r.conn.Get(r.slotsPath())
		return e
	})
	if errors.Is(err, zk.ErrNoNode) {
		return nil, -1, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("zk.ReadSlotMap: %w", err)
	}
	return data, st.Version, nil
}

// WriteSlotMap replaces the slot map at version (-1: create it) with data,
// as leader l, and returns the new version. It is one ZooKeeper
// transaction (multi): a check that <root>/leader-epoch is still at
// l.Epoch, plus the create or versioned set of <root>/slots; so a deposed
// leader's write fails (ErrNotLeader) even when it does not know it was
// deposed (a frozen process, a partition), and two writes based on the
// same version cannot both succeed (ErrSlotMapChanged). ErrNotLeader wins
// when both apply. A write whose reply was lost is recognised on retry
// (the map is at version+1 with exactly these bytes and the epoch is
// unchanged) and reported as done.
//
// The check is the epoch, not the session: a leader whose session expired
// can still write while no other leader was elected, which is harmless
// (nobody else decides meanwhile; the next leader's epoch fences it).
func (r *Registry) WriteSlotMap(ctx context.Context, l *Leadership, data []byte, version int32) (int32, error) {
	if l == nil {
		return 0, fmt.Errorf("zk.WriteSlotMap: %w", ErrNotLeader)
	}
	if version < -1 {
		return 0, fmt.Errorf("zk.WriteSlotMap: bad version %d", version)
	}
	sp, ep := r.slotsPath(), r.leaderEpochPath()
	var op any = &zk.SetDataRequest{Path: sp, Data: data, Version: version}
	if version == -1 {
		op = &zk.CreateRequest{Path: sp, Data: data, Acl: r.acl, Flags: zk.FlagPersistent}
	}
	attempts := 0
	var res []zk.MultiResponse
	err := r.do(ctx, func() error {
		attempts++
		var e error
		res, e = r.conn.Multi(&zk.CheckVersionRequest{Path: ep, Version: l.Epoch}, op)
		return e
	})
	if err == nil {
		if version == -1 {
			return 0, nil
		}
		if len(res) == 2 && res[1].Stat != nil {
			return res[1].Stat.Version, nil
		}
		return version + 1, nil
	}
	var epochErr, slotErr error
	if len(res) == 2 {
		epochErr, slotErr = res[0].Error, res[1].Error
	}
	switch {
	case errors.Is(epochErr, zk.ErrBadVersion) || errors.Is(epochErr, zk.ErrNoNode):
		return 0, fmt.Errorf("zk.WriteSlotMap epoch %d: %w", l.Epoch, ErrNotLeader)
	case errors.Is(slotErr, zk.ErrBadVersion) || errors.Is(slotErr, zk.ErrNodeExists) || errors.Is(slotErr, zk.ErrNoNode):
		if attempts > 1 && r.ownWriteLanded(ctx, l, data, version) {
			return version + 1, nil
		}
		return 0, fmt.Errorf("zk.WriteSlotMap version %d: %w", version, ErrSlotMapChanged)
	}
	return 0, fmt.Errorf("zk.WriteSlotMap version %d: %w", version, err)
}

// ownWriteLanded tells whether an earlier attempt of this write succeeded
// (its reply was lost): the map is at version+1 with our bytes and the
// epoch is still ours.
func (r *Registry) ownWriteLanded(ctx context.Context, l *Leadership, data []byte, version int32) bool {
	got, v, err := r.ReadSlotMap(ctx)
	if err != nil || v != version+1 || !bytes.Equal(got, data) {
		return false
	}
	var st *zk.Stat
	err = r.do(ctx, func() error {
		var e error
		_, st, e = r.conn.Exists(r.leaderEpochPath())
		return e
	})
	return err == nil && st != nil && st.Version == l.Epoch
}

// WatchSlotMap sends the slot map at once, then after every change of its
// data and after every reconnect (a data watch re-armed each time; an
// exists watch while it does not exist, sent as Version -1). The channel
// holds the latest value only: a slow reader misses intermediate versions
// but never gets an older one after a newer one. It closes when ctx ends
// or the Registry closes.
func (r *Registry) WatchSlotMap(ctx context.Context) <-chan SlotMap {
	out := make(chan SlotMap, 1)
	if !r.track() {
		close(out)
		return out
	}
	sp := r.slotsPath()
	go func() {
		defer r.wg.Done()
		defer close(out)
		send := func(m SlotMap) {
			select { // replace an unread older value: the reader wants the latest
			case <-out:
			default:
			}
			out <- m // cannot block: this goroutine is the only sender
		}
		r.watchLoop(ctx, "slots", func(w *watchSet) error {
			for {
				data, st, err := w.get(sp)
				if err == nil {
					send(SlotMap{Data: data, Version: st.Version})
					return nil
				}
				if !errors.Is(err, zk.ErrNoNode) {
					return err
				}
				ok, err := w.exists(sp)
				if err != nil {
					return err
				}
				if ok {
					continue // created meanwhile: read it (and arm its data watch)
				}
				send(SlotMap{Version: -1})
				return nil
			}
		})
	}()
	return out
}
