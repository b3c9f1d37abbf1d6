package zk

import (
	"context"
	"errors"
	"time"

	zk "github.com/sorakaq/sorakaq/internal/registry/zk/internal/gozk"
	"go.uber.org/zap"
)

// watchSet arms ZooKeeper watches (one-shot) and re-arms only those that
// fired, so a path never collects duplicate watchers. Its methods are used
// from one goroutine (the loop in watchLoop).
type watchSet struct {
	r     *Registry
	ctx   context.Context
	armed map[string]bool // "c"/"d"/"e" + path
	fired chan string
}

func (w *watchSet) children(p string) ([]string, *zk.Stat, error) {
	var (
		kids []string
		st   *zk.Stat
	)
	key := "c" + p
	if w.armed[key] {
		err := w.r.do(w.ctx, func() error {
			var e error
			kids, st, e = w.r.conn.Children(p)
			return e
		})
		return kids, st, err
	}
	var ch <-chan zk.Event
	err := w.r.do(w.ctx, func() error {
		var e error
		kids, st, ch, e = w.r.conn.ChildrenW(p)
		return e
	})
	if err == nil {
		w.arm(key, ch)
	}
	return kids, st, err
}

func (w *watchSet) get(p string) ([]byte, *zk.Stat, error) {
	var (
		data []byte
		st   *zk.Stat
	)
	key := "d" + p
	if w.armed[key] {
		err := w.r.do(w.ctx, func() error {
			var e error
			data, st, e = w.r.conn.Get(p)
			return e
		})
		return data, st, err
	}
	var ch <-chan zk.Event
	err := w.r.do(w.ctx, func() error {
		var e error
		data, st, ch, e = w.r.conn.GetW(p)
		return e
	})
	if err == nil {
		w.arm(key, ch)
	}
	return data, st, err
}

func (w *watchSet) exists(p string) (bool, error) {
	var ok bool
	key := "e" + p
	if w.armed[key] {
		err := w.r.do(w.ctx, func() error {
			var e error
			ok, _, e = w.r.conn.Exists(p)
			return e
		})
		return ok, err
	}
	var ch <-chan zk.Event
	err := w.r.do(w.ctx, func() error {
		var e error
		ok, _, ch, e = w.r.conn.ExistsW(p)
		return e
	})
	if err == nil {
		w.arm(key, ch)
	}
	return ok, err
}

func (w *watchSet) isArmed(kind, p string) bool { return w.armed[kind+p] }

func (w *watchSet) arm(key string, ch <-chan zk.Event) {
	w.armed[key] = true
	go func() {
		select {
		case <-ch: // fired, or invalidated (session expired / closing)
		case <-w.ctx.Done():
			return
		}
		select {
		case w.fired <- key:
		case <-w.ctx.Done():
		}
	}()
}

// watchLoop calls load at once, then again whenever a watch it armed fires
// and after every (re)connect, until ctx ends or the Registry closes. A
// failing load is retried with a backoff.
func (r *Registry) watchLoop(ctx context.Context, what string, load func(w *watchSet) error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-r.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	w := &watchSet{r: r, ctx: ctx, armed: map[string]bool{}, fired: make(chan string, 64)}
	backoff := 100 * time.Millisecond
	for {
		gen := r.connGen()
		err := load(w)
		if ctx.Err() != nil {
			return
		}
		var retry <-chan time.Time
		if err != nil {
			if !errors.Is(err, ErrClosed) {
				r.log.Debug("zookeeper watch: reload failed", zap.String("watch", what), zap.Error(err))
			}
			retry = time.After(backoff)
			backoff = min(backoff*2, 2*time.Second)
		} else {
			backoff = 100 * time.Millisecond
		}
		select {
		case <-ctx.Done():
			return
		case key := <-w.fired:
			w.armed[key] = false
			for drained := false; !drained; {
				select {
				case k := <-w.fired:
					w.armed[k] = false
				default:
					drained = true
				}
			}
		case <-gen:
		case <-retry:
		}
	}
}
