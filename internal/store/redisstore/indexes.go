package redisstore

import (
	"context"
	"strconv"

	"github.com/redis/go-redis/v9"

	"github.com/sorakaq/sorakaq/internal/message"
)

// indexOps receives the index commands of one message change. The same
// change is either queued in a MULTI/EXEC (pipeOps) or handed to a Lua
// script as a list (scriptOps), so both write paths share one description
// of what a change does to the indexes (indexChanges).
type indexOps interface {
	zadd(key string, score float64, member string)
	zrem(key, member string)
	hincr(key, field string, by int64)
	set(key, value string)
	del(key string)
}

// indexChanges emits the index changes that take a message from old to m
// (either may be nil for create/delete): schedule entry, listings,
// counters, idempotency key and purge entry, all in the message's slot.
func (s *Store) indexChanges(w indexOps, old, m *message.Message) {
	k := s.keys
	if old != nil {
		sl := k.slot(old.ID)
		topicGone := m == nil || m.Topic != old.Topic
		if old.State.Pending() && (m == nil || !m.State.Pending() ||
			m.DueMs != old.DueMs || m.ID != old.ID || m.Version != old.Version) {
			w.zrem(k.due(sl), dueMember(old.DueMs, old.ID, old.Version))
		}
		if topicGone || m.State != old.State {
			w.zrem(k.topicState(sl, old.Topic, old.State), old.ID)
			w.hincr(k.counts(sl), countField(old.Topic, old.State), -1)
		}
		if topicGone {
			w.zrem(k.topicAll(sl, old.Topic), old.ID)
		}
		if purgeable(old) && (m == nil || !purgeable(m)) {
			w.zrem(k.done(sl), old.ID)
		}
		if m == nil && old.IdemKey != "" {
			w.del(k.idem(old.Topic, old.IdemKey))
		}
	}
	if m != nil {
		sl := k.slot(m.ID)
		topicNew := old == nil || m.Topic != old.Topic
		if m.State.Pending() {
			w.zadd(k.due(sl), 0, dueMember(m.DueMs, m.ID, m.Version))
		}
		if topicNew || m.State != old.State {
			w.zadd(k.topicState(sl, m.Topic, m.State), 0, m.ID)
			w.hincr(k.counts(sl), countField(m.Topic, m.State), 1)
		}
		if topicNew {
			w.zadd(k.topicAll(sl, m.Topic), 0, m.ID)
		}
		if old == nil && m.IdemKey != "" {
			w.set(k.idem(m.Topic, m.IdemKey), m.ID)
		}
		if purgeable(m) {
			w.zadd(k.done(sl), float64(m.DoneMs), m.ID)
		}
	}
}

// pipeOps queues the commands in a pipeline (a MULTI/EXEC).
type pipeOps struct {
	ctx context.Context
	p   redis.Pipeliner
}

func (o pipeOps) zadd(key string, score float64, member string) {
	o.p.ZAdd(o.ctx, key, redis.Z{Score: score, Member: member})
}
func (o pipeOps) zrem(key, member string)           { o.p.ZRem(o.ctx, key, member) }
func (o pipeOps) hincr(key, field string, by int64) { o.p.HIncrBy(o.ctx, key, field, by) }
func (o pipeOps) set(key, value string)             { o.p.Set(o.ctx, key, value, 0) }
func (o pipeOps) del(key string)                    { o.p.Del(o.ctx, key) }

// scriptOps lists the commands for applyOps in a Lua script: one key per
// command, and three arguments each (the command's name and up to two
// operands).
type scriptOps struct {
	keys []string
	args []any
}

func (o *scriptOps) add(key, op string, a, b any) {
	o.keys = append(o.keys, key)
	o.args = append(o.args, op, a, b)
}

func (o *scriptOps) zadd(key string, score float64, member string) {
	o.add(key, "ZADD", strconv.FormatFloat(score, 'f', -1, 64), member)
}
func (o *scriptOps) zrem(key, member string)           { o.add(key, "ZREM", member, "") }
func (o *scriptOps) hincr(key, field string, by int64) { o.add(key, "HINCRBY", field, by) }
func (o *scriptOps) set(key, value string)             { o.add(key, "SET", value, "") }
func (o *scriptOps) del(key string)                    { o.add(key, "DEL", "", "") }

// applyOps is the Lua that runs a scriptOps list whose first key is
// KEYS[k0+1] and first argument ARGV[a0+1].
const applyOps = `
local function applyOps(k0, a0)
  local i = 1
  while k0 + i <= #KEYS do
    local key, op, a, b = KEYS[k0 + i], ARGV[a0 + 3*i - 2], ARGV[a0 + 3*i - 1], ARGV[a0 + 3*i]
    if op == 'ZADD' or op == 'HINCRBY' then redis.call(op, key, a, b)
    elseif op == 'ZREM' or op == 'SET' then redis.call(op, key, a)
    else redis.call(op, key) end
    i = i + 1
  end
end
`
