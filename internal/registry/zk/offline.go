package zk

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	zk "github.com/sorakaq/sorakaq/internal/registry/zk/internal/gozk"
)

// offlineData is the content of an offline marker (informational).
type offlineData struct {
	NodeID  string `json:"node_id"`
	SinceMs int64  `json:"since_ms"`
}

func (r *Registry) offlinePath(id string) string { return r.offlineRoot() + "/" + id }
func sessionHex(id int64) string                 { return fmt.Sprintf("0x%x", id) }
func (r *Registry) selfNodeID() (id string) {
	r.instMu.Lock()
	defer r.instMu.Unlock()
	if r.self != nil {
		id = r.self.NodeID
	}
	return id
}

// SetOffline sets (offline=true) or removes the persistent marker
// offline/<nodeID>. The leader center reads the markers (IsOffline) and
// gives an offline worker no slots.
func (r *Registry) SetOffline(ctx context.Context, nodeID string, offline bool) error {
	if err := validNodeID(nodeID); err != nil {
		return fmt.Errorf("zk.SetOffline %s: %w", nodeID, err)
	}
	p := r.offlinePath(nodeID)
	var err error
	if offline {
		data, _ := json.Marshal(offlineData{NodeID: nodeID, SinceMs: time.Now().UnixMilli()})
		create := func() error {
			_, err := r.conn.Create(p, data, zk.FlagPersistent, r.acl)
			return err
		}
		err = r.do(ctx, create)
		if errors.Is(err, zk.ErrNoNode) {
			if err = r.ensurePath(ctx, r.offlineRoot()); err == nil {
				err = r.do(ctx, create)
			}
		}
		if errors.Is(err, zk.ErrNodeExists) {
			err = nil
		}
	} else {
		err = r.do(ctx, func() error { return r.conn.Delete(p, -1) })
		if errors.Is(err, zk.ErrNoNode) {
			err = nil
		}
	}
	if err != nil {
		return fmt.Errorf("zk.SetOffline %s %v: %w", nodeID, offline, err)
	}
	return nil
}

// IsOffline reports whether the marker offline/<nodeID> exists.
func (r *Registry) IsOffline(ctx context.Context, nodeID string) (bool, error) {
	if err := validNodeID(nodeID); err != nil {
		return false, fmt.Errorf("zk.IsOffline %s: %w", nodeID, err)
	}
	var ok bool
	err := r.do(ctx, func() error {
		var e error
		ok, _, e = r.conn.Exists(r.offlinePath(nodeID))
		return e
	})
	if err != nil {
		return false, fmt.Errorf("zk.IsOffline %s: %w", nodeID, err)
	}
	return ok, nil
}
