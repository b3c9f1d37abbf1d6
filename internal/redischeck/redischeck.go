// Package redischeck tells what the Redis behind the distributed mode
// promises: what an acknowledged write survives under each master's
// persistence settings (Persistence), how far this process's wall clock is
// from Redis' (Skew), and whether a write reached replicas (Wait); Watch
// repeats the checks every distributed process runs (the clock skew, and
// whether the data set is still there).
//
// Nothing here changes Redis' configuration; it only reads it.
package redischeck

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/redis/go-redis/v9"
)

// Unknown is the value of a setting that could not be read: CONFIG is
// renamed or disabled (as on most managed Redis services) or forbidden by
// an ACL.
const Unknown = "unknown"

// Settings are one master's persistence settings as CONFIG GET and INFO
// report them.
type Settings struct {
	Addr            string
	AppendOnly      string // "yes", "no" or Unknown
	AppendFsync     string // "always", "everysec", "no" or Unknown
	MaxmemoryPolicy string // "noeviction", "allkeys-lru", ... or Unknown
	Save            string // RDB snapshot schedule, "" when snapshots are off, or Unknown
	Replicas        int    // connected replicas (INFO replication), -1 when unknown
	// Why is set when some setting is Unknown: the error Redis answered.
	Why string
	// Guarantee is this master's own one-line guarantee (see Report).
	Guarantee string
}

// Report is what Persistence found.
type Report struct {
	// Masters in address order: one for a single Redis or Sentinel
	// client, one per master of a Cluster or shard of a Ring.
	Masters []Settings
	// Guarantee says in one line what an acknowledged write survives on the
	// weakest master: a Redis process kill, a host power loss, eviction.
	Guarantee string
	// Warnings name each setting that can lose or corrupt acknowledged
	// messages, with the master it is on.
	Warnings []string
}

// durability ranks what a master's persistence keeps, weakest first.
type durability int

const (
	durUnknown  durability = iota // CONFIG not readable
	durNone                       // no AOF, no RDB: a restart loses everything
	durSnapshot                   // RDB only: a restart loses everything since the last snapshot
	durAOFNo                      // AOF, the OS decides when to fsync
	durEverysec                   // AOF, fsync every second
	durAlways                     // AOF, fsync before the reply
)

func (s Settings) durability() durability {
	switch {
	case s.AppendOnly == Unknown:
		return durUnknown
	case s.AppendOnly == "yes":
		switch s.AppendFsync {
		case "always":
			return durAlways
		case "everysec":
			return durEverysec
		case "no":
			return durAOFNo
		default:
			return durUnknown
		}
	case s.Save == Unknown:
		return durUnknown
	case strings.TrimSpace(s.Save) != "":
		return durSnapshot
	default:
		return durNone
	}
}

// survives is the persistence part of a guarantee.
func survives(d durability, s Settings) string {
	switch d {
	case durAlways:
		return "an acknowledged write survives a Redis process kill and a host power loss (AOF, appendfsync always)"
	case durEverysec:
		return "an acknowledged write survives a Redis process kill, except while an fsync is slow: Redis then postpones its AOF write for up to 2 s and still answers, so a kill loses what it answered in those 2 s; a host power loss or kernel crash loses up to ~1 s of acknowledged writes (up to ~2 s when the disk stalls) (AOF, appendfsync everysec); a lost message is counted at its fire time (sorakaq_store_errors_total{op=\"missing\"})"
	case durAOFNo:
		return "an acknowledged write survives a Redis process kill; a host power loss loses what the OS had not yet flushed, typically up to ~30 s (AOF, appendfsync no)"
	case durSnapshot:
		return fmt.Sprintf("a Redis restart (process kill or power loss) loses every acknowledged write since the last RDB snapshot (appendonly no, save %q)", s.Save)
	case durNone:
		return "a Redis restart (process kill or power loss) loses every acknowledged write (appendonly no, no RDB snapshots)"
	default:
		why := ""
		if s.Why != "" {
			why = ": " + s.Why
		}
		return "unknown: the persistence settings of " + s.Addr + " cannot be read (CONFIG renamed, disabled or not permitted" + why + "); check them with the provider"
	}
}

// guarantee is a master's full one-line guarantee.
func (s Settings) guarantee() string {
	g := survives(s.durability(), s)
	switch s.MaxmemoryPolicy {
	case "noeviction":
	case Unknown:
		g += "; eviction policy unknown"
	default:
		g += "; maxmemory-policy " + s.MaxmemoryPolicy + " can evict message keys (silent loss and corruption)"
	}
	if s.Replicas > 0 {
		g += "; a failover to a replica loses writes not yet replicated (replication is asynchronous; WAIT narrows this)"
	}
	return g
}

// warnings lists a master's dangerous settings.
func (s Settings) warnings() []string {
	var w []string
	switch s.durability() {
	case durUnknown:
		w = append(w, s.Addr+": persistence settings unknown ("+s.Why+"): cannot tell what an acknowledged message survives")
	case durNone:
		w = append(w, s.Addr+": no persistence (appendonly no, no RDB snapshots): a Redis restart loses every pending message")
	case durSnapshot:
		w = append(w, s.Addr+": appendonly no: a Redis restart loses every message acknowledged since the last RDB snapshot (save "+strconv.Quote(s.Save)+")")
	case durAOFNo:
		w = append(w, s.Addr+": appendfsync no: a host power loss loses the acknowledged writes the OS had not flushed (typically up to ~30 s); use everysec or always")
	}
	switch s.MaxmemoryPolicy {
	case "noeviction", Unknown:
	default:
		w = append(w, s.Addr+": maxmemory-policy "+s.MaxmemoryPolicy+" can evict message keys and index entries independently: silent loss and corrupted state; use noeviction")
	}
	return w
}

// Persistence reads appendonly, appendfsync, maxmemory-policy and save
// (and the number of connected replicas) on every master behind c and says
// what an acknowledged write survives. A setting Redis refuses to show
// (CONFIG renamed or disabled, ACL) is reported as Unknown, not as an
// error; the error is for a Redis that cannot be reached.
func Persistence(ctx context.Context, c redis.UniversalClient) (Report, error) {
	var (
		mu      sync.Mutex
		masters []Settings
	)
	one := func(ctx context.Context, m *redis.Client) error {
		s, err := settings(ctx, m)
		if err != nil {
			return err
		}
		mu.Lock()
		masters = append(masters, s)
		mu.Unlock()
		return nil
	}
	var err error
	switch cc := c.(type) {
	case *redis.ClusterClient:
		err = cc.ForEachMaster(ctx, one)
	case *redis.Ring:
		err = cc.ForEachShard(ctx, one)
	case *redis.Client:
		err = one(ctx, cc)
	default:
		return Report{}, fmt.Errorf("redischeck: unsupported client %T", c)
	}
	if err != nil {
		return Report{}, fmt.Errorf("redischeck: persistence: %w", err)
	}
	if len(masters) == 0 {
		return Report{}, errors.New("redischeck: persistence: no master found")
	}
	slices.SortFunc(masters, func(a, b Settings) int { return strings.Compare(a.Addr, b.Addr) })
	r := Report{Masters: masters}
	weakest := -1
	for i, m := range masters {
		r.Warnings = append(r.Warnings, m.warnings()...)
		if weakest < 0 || rank(m) < rank(masters[weakest]) {
			weakest = i
		}
	}
	r.Guarantee = masters[weakest].Guarantee
	if len(masters) > 1 {
		same := true
		for _, m := range masters {
			same = same && m.Guarantee == r.Guarantee
		}
		if same {
			r.Guarantee = fmt.Sprintf("%s (all %d masters)", r.Guarantee, len(masters))
		} else {
			r.Guarantee = fmt.Sprintf("%s (weakest of %d masters: %s)", r.Guarantee, len(masters), masters[weakest].Addr)
		}
	}
	return r, nil
}

// rank orders masters for the overall guarantee: weaker persistence first,
// then evicting before not evicting, then replicated (failover loss) before
// not.
func rank(s Settings) int {
	r := int(s.durability()) * 4
	if s.MaxmemoryPolicy == "noeviction" {
		r += 2
	}
	if s.Replicas <= 0 {
		r++
	}
	return r
}

// settings reads one master's settings in one round trip.
func settings(ctx context.Context, m *redis.Client) (Settings, error) {
	s := Settings{Addr: m.Options().Addr, Replicas: -1}
	params := []string{"appendonly", "appendfsync", "maxmemory-policy", "save"}
	cmds := make([]*redis.MapStringStringCmd, len(params))
	var info *redis.StringCmd
	// One parameter per CONFIG GET: Redis before 7 takes only one.
	_, _ = m.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, name := range params {
			cmds[i] = p.ConfigGet(ctx, name)
		}
		info = p.Info(ctx, "replication")
		return nil
	})
	var whys []string
	vals := make([]string, len(params))
	for i, cmd := range cmds {
		got, err := cmd.Result()
		if err != nil {
			if !isReply(err) {
				return s, fmt.Errorf("%s: config get %s: %w", s.Addr, params[i], err)
			}
			whys = append(whys, "CONFIG GET "+params[i]+": "+strings.TrimSpace(err.Error()))
			vals[i] = Unknown
			continue
		}
		v, ok := got[params[i]]
		if !ok {
			whys = append(whys, "CONFIG GET "+params[i]+": no such parameter")
			v = Unknown
		}
		vals[i] = v
	}
	s.AppendOnly, s.AppendFsync, s.MaxmemoryPolicy, s.Save = vals[0], vals[1], vals[2], vals[3]
	if text, err := info.Result(); err == nil {
		s.Replicas = infoInt(text, "connected_slaves")
	} else if !isReply(err) {
		return s, fmt.Errorf("%s: info replication: %w", s.Addr, err)
	}
	if len(whys) > 0 {
		// The same refusal for every parameter is said once.
		whys = slices.Compact(whys)
		s.Why = whys[0]
		if len(whys) > 1 {
			s.Why += fmt.Sprintf(" (and %d more)", len(whys)-1)
		}
	}
	s.Guarantee = s.guarantee()
	return s, nil
}

// isReply tells an error answer from Redis (unknown command, NOPERM, ...)
// from a failure to talk to it (network, timeout, context).
func isReply(err error) bool {
	var re redis.Error
	return errors.As(err, &re) && !errors.Is(err, redis.Nil)
}

// infoInt reads one integer field of an INFO answer, -1 when absent.
func infoInt(info, field string) int {
	for line := range strings.SplitSeq(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), field+":"); ok {
			if n, err := strconv.Atoi(v); err == nil {
				return n
			}
		}
	}
	return -1
}
