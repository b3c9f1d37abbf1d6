package redisstore

import (
	"context"
	"fmt"
	"strconv"

	"github.com/redis/go-redis/v9"

	"github.com/sorakaq/sorakaq/internal/message"
	"github.com/sorakaq/sorakaq/internal/store"
)

// replaceScript is Replace in one round trip: it checks the slot's lease
// against the expected token (unless ARGV[1] is ""), compares the stored
// message's revision with the one the writer read, and writes the new
// message with its index changes, atomically. A worker's outcome write
// was a WATCH, an MGET, a MULTI/EXEC and a second decode before.
//
//	KEYS: msg, lease (msg when no check), then one key per index command
//	ARGV: token or "", version, state, updated_at, attempts, due_at, new JSON, index commands (3 each)
//
// Running it again after it wrote answers ok (the stored JSON is the new
// one): go-redis sends a command again when its reply was lost, and a
// pipeline again whole, so a landed outcome must not read as "changed".
const replaceSrc = applyOps + `
if ARGV[1] ~= '' and redis.call('GET', KEYS[2]) ~= ARGV[1] then return 'fenced' end
local raw = redis.call('GET', KEYS[1])
if not raw then return 'missing' end
-- already written (this command ran and was sent again after its reply was lost)
if raw == ARGV[7] then return 'ok' end
local cur = cjson.decode(raw)
if cur.version ~= tonumber(ARGV[2]) or cur.state ~= ARGV[3] or cur.updated_at ~= tonumber(ARGV[4])
  or cur.attempts ~= tonumber(ARGV[5]) or cur.due_at ~= tonumber(ARGV[6]) then
  return 'changed'
end
redis.call('SET', KEYS[1], ARGV[7])
applyOps(2, 7)
return 'ok'
`

var replaceScript = redis.NewScript(replaceSrc)

// replaceScripted runs replaceScript for Replace (v is m's JSON).
func (s *Store) replaceScripted(ctx context.Context, old, m *message.Message, v []byte) error {
	key := s.keys.msg(m.ID)
	lease, tok := key, ""
	if s.token != nil {
		sl := s.keys.slot(m.ID)
		t, ok := s.token(sl)
		if !ok || t == "" {
			return store.ErrFenced
		}
		lease, tok = s.keys.lease(sl), t
	}
	ops := &scriptOps{keys: []string{key, lease}}
	ops.args = []any{tok, strconv.FormatUint(old.Version, 10), string(old.State), old.UpdatedMs, old.Attempts, old.DueMs, v}
	s.indexChanges(ops, old, m)
	cmd, err := s.pipe.eval(ctx, replaceScript, replaceSrc, ops.keys, ops.args...)
	var res string
	if err == nil {
		res, err = cmd.Text()
	}
	if err != nil {
		return fmt.Errorf("redisstore.Replace %s: %w", m.ID, err)
	}
	switch res {
	case "ok":
		return nil
	case "fenced":
		return store.ErrFenced
	case "missing":
		return store.ErrNotFound
	case "changed":
		return fmt.Errorf("redisstore.Replace %s: %w", m.ID, store.ErrChanged)
	}
	return fmt.Errorf("redisstore.Replace %s: unexpected answer %q from the script", m.ID, res)
}
