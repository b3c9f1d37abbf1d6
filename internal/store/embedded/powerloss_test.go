package embedded

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/sorakaq/sorakaq/internal/message"
	"github.com/sorakaq/sorakaq/internal/store"
)

// The power-loss test runs the store on Pebble's crashable in-memory
// filesystem, which keeps what was written apart from what was synced.
// Writers submit (some with an idempotency key, some several messages in
// one Create), change delays, cancel, and mark messages as being delivered
// (a Lazy write), recording every write before it starts and every answer.
// While they run, the power is cut: the filesystem is cloned as a crash
// would leave it (everything synced, plus a random share of the unsynced
// blocks and directory entries). The store is opened on the clone, and
// every message must be in a state the writers wrote, no older than the
// last Sync write acknowledged before the cut; the schedule (Due), the
// counters (Counts) and every index key must agree with the messages. The
// next round writes on the recovered store, so one run cuts the power many
// times in a row.
//
// SORAKAQ_POWERLOSS_SEED=<n> runs one chosen seed, SORAKAQ_POWERLOSS_ROUNDS
// sets the number of cuts per seed.

const plDir = "/db"

var plTopics = []string{"pl_a", "pl_b"}

// plMsg is one message's life as the writers drove it. The owning writer
// changes it under cut.RLock; the cutter reads it under cut.Lock.
type plMsg struct {
	id, topic, key string
	group          *plGroup // the Create call it came in
	hist           [][]byte // JSON of every state written, hist[0] the created one
	started        int      // last index of hist whose write began; -1 none
	acked          int      // last index written Sync and acknowledged; -1 none
	cur            *message.Message
	refused        bool // its Create was refused (duplicate key): must not exist
}

type plGroup struct{ msgs []*plMsg }

// plSnap is what was known at the cut.
type plSnap struct {
	m              *plMsg
	hist           [][]byte
	started, acked int
}

// powerLoss drives the store through rounds power cuts.
type powerLoss struct {
	t       *testing.T
	seed    uint64
	rounds  int
	writers int
	unsync  unsyncMode
	until   string // stop after the first cut with a problem containing this

	cut     sync.RWMutex // writers record under RLock; the cut takes Lock
	ledgers [][]*plMsg   // per writer
	acks    atomic.Int64 // acknowledged writes this round
	refused atomic.Int64 // duplicate-key submits refused as they should be
	total   struct{ acked, carried, cuts, inFlightKept, lazyKept int }
}

// run returns every problem found after each cut.
func (p *powerLoss) run() []string {
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(p.seed, 0))
	p.ledgers = make([][]*plMsg, p.writers)
	fs := vfs.NewCrashableMem()
	s := p.open(fs)
	var problems []string
	for round := 0; round < p.rounds; round++ {
		p.acks.Store(0)
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for w := 0; w < p.writers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				p.write(ctx, s, w, rand.New(rand.NewPCG(p.seed, uint64(round*p.writers+w+1))), stop)
			}()
		}
		// Cut after a random number of acknowledged writes, while the
		// writers are still going.
		target := int64(1 + rng.IntN(150))
		deadline := time.Now().Add(20 * time.Second)
		for p.acks.Load() < target && !p.t.Failed() {
			if time.Now().After(deadline) {
				p.t.Errorf("round %d: only %d of %d writes acknowledged in 20s", round, p.acks.Load(), target)
				break
			}
			time.Sleep(50 * time.Microsecond)
		}
		unsynced := []int{0, 0, 10, 50}[rng.IntN(4)]
		p.cut.Lock()
		snap := p.snapshot()
		crashed := fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: unsynced, RNG: rand.New(rand.NewPCG(p.seed, uint64(1000+round)))})
		p.cut.Unlock()
		close(stop)
		wg.Wait()
		p.total.acked += int(p.acks.Load())
		if err := s.Close(); err != nil {
			p.t.Fatalf("round %d: close: %v", round, err)
		}
		if p.t.Failed() {
			return problems
		}
		p.total.cuts++
		fs = crashed
		s = p.open(fs)
		recovered, found := p.check(ctx, s, snap)
		for _, f := range found {
			problems = append(problems, fmt.Sprintf("seed %d cut %d (unsynced kept %d%%): %s", p.seed, round, unsynced, f))
		}
		if slices.ContainsFunc(found, func(f string) bool { return strings.Contains(f, p.until) }) {
			break // the rest would only repeat it
		}
		p.total.carried += len(recovered)
		p.rebase(recovered)
	}
	if err := s.Close(); err != nil {
		p.t.Errorf("close: %v", err)
	}
	return problems
}

func (p *powerLoss) open(fs vfs.FS) *Store {
	s, err := Open(Options{Dir: plDir, FS: fs, CacheBytes: 1 << 20, MemTableSize: 256 << 10, unsyncForTest: p.unsync})
	if err != nil {
		p.t.Fatalf("open after a power cut: %v", err)
	}
	return s
}

func (p *powerLoss) snapshot() []plSnap {
	var out []plSnap
	for _, l := range p.ledgers {
		for _, m := range l {
			out = append(out, plSnap{m: m, hist: m.hist[:m.started+1], started: m.started, acked: m.acked})
		}
	}
	return out
}

// write is one writer's loop until stop.
func (p *powerLoss) write(ctx context.Context, s *Store, w int, rng *rand.Rand, stop chan struct{}) {
	errf := func(format string, args ...any) { p.t.Errorf("writer %d: "+format, append([]any{w}, args...)...) }
	for {
		select {
		case <-stop:
			return
		default:
		}
		var live, done []*plMsg
		for _, m := range p.ledgers[w] {
			switch {
			case m.cur == nil: // not acknowledged, refused or deleted
			case m.cur.State.Final():
				done = append(done, m)
			default:
				live = append(live, m)
			}
		}
		// About 40 live messages per writer, and finished ones deleted
		// (as Purge would), so that a round's work stays the same size.
		r := rng.IntN(100)
		switch {
		case len(done) > 10 || len(done) > 0 && r < 5:
			p.remove(ctx, s, done[rng.IntN(len(done))], errf)
		case len(live) == 0 || r < 35 && len(live) < 40:
			p.create(ctx, s, w, rng, errf)
		case r >= 35 && r < 40:
			p.duplicate(ctx, s, w, rng, errf)
		default:
			m := live[rng.IntN(len(live))]
			next := m.cur.Clone()
			now := time.Now().UnixMilli()
			d := store.Sync
			switch {
			case r < 65:
				next.DueMs = now + 1000 + rng.Int64N(1e6)
				next.Version++
				next.AddEvent(now, message.EventDelay, "set")
			case r < 78:
				next.State = message.StateCancelled
				next.DoneMs = now
				next.Version++
				next.AddEvent(now, message.EventCancelled, "")
			case next.State == message.StateDelivering:
				next.State = message.StateRetrying
				next.DueMs = now + 1000 + rng.Int64N(1e5)
				next.Version++
				next.AddEvent(now, message.EventFailed, "503")
			default:
				next.State = message.StateDelivering
				next.Attempts++
				next.AddEvent(now, message.EventAttempt, "")
				d = store.Lazy
			}
			p.update(ctx, s, m, next, d, errf)
		}
	}
}

func encode(m *message.Message) []byte {
	v, err := json.Marshal(m)
	if err != nil {
		panic(err)
	}
	return v
}

func (p *powerLoss) create(ctx context.Context, s *Store, w int, rng *rand.Rand, errf func(string, ...any)) {
	now := time.Now().UnixMilli()
	g := &plGroup{}
	var msgs []*message.Message
	for range 1 + rng.IntN(3) {
		m := &message.Message{ID: message.NewID(), Topic: plTopics[rng.IntN(len(plTopics))], DelayMs: 1000, TTRMs: 1000,
			Callback:   message.Callback{RequestType: "POST", URL: "http://127.0.0.1/cb", Params: strconv.Itoa(rng.IntN(1e6))},
			ReceivedMs: now, DueMs: now + 1000 + rng.Int64N(1e6), State: message.StateDelayed, Version: 1}
		if rng.IntN(100) < 40 {
			m.IdemKey = fmt.Sprintf("k-%d-%s", w, m.ID)
		}
		m.AddEvent(now, message.EventSubmitted, "")
		msgs = append(msgs, m)
		g.msgs = append(g.msgs, &plMsg{id: m.ID, topic: m.Topic, key: m.IdemKey, group: g, hist: [][]byte{encode(m)}, acked: -1})
	}
	p.cut.RLock()
	for _, pm := range g.msgs {
		pm.started = 0
	}
	p.ledgers[w] = append(p.ledgers[w], g.msgs...)
	p.cut.RUnlock()
	if err := s.Create(ctx, msgs...); err != nil {
		errf("create: %v", err)
		return
	}
	p.cut.RLock()
	for i, pm := range g.msgs {
		pm.acked, pm.cur = 0, msgs[i]
	}
	p.cut.RUnlock()
	p.acks.Add(1)
}

// duplicate submits a new message with a key an acknowledged message
// holds (in a batch with a fresh one): the whole Create must be refused,
// naming the holder.
func (p *powerLoss) duplicate(ctx context.Context, s *Store, w int, rng *rand.Rand, errf func(string, ...any)) {
	var keyed []*plMsg
	for _, m := range p.ledgers[w] {
		if m.key != "" && m.cur != nil {
			keyed = append(keyed, m)
		}
	}
	if len(keyed) == 0 {
		return
	}
	holder := keyed[rng.IntN(len(keyed))]
	now := time.Now().UnixMilli()
	var msgs []*message.Message
	g := &plGroup{}
	for i := range 2 {
		m := &message.Message{ID: message.NewID(), Topic: holder.topic, DelayMs: 1000, TTRMs: 1000,
			Callback: message.Callback{RequestType: "POST", URL: "http://127.0.0.1/cb"}, ReceivedMs: now, DueMs: now + 5000,
			State: message.StateDelayed, Version: 1}
		if i == 1 {
			m.IdemKey = holder.key
		}
		msgs = append(msgs, m)
		g.msgs = append(g.msgs, &plMsg{id: m.ID, topic: m.Topic, key: m.IdemKey, group: g, hist: [][]byte{encode(m)}, started: -1, acked: -1, refused: true})
	}
	p.cut.RLock()
	p.ledgers[w] = append(p.ledgers[w], g.msgs...)
	p.cut.RUnlock()
	err := s.Create(ctx, msgs...)
	var dup *store.DuplicateError
	if !errors.As(err, &dup) || dup.ID != holder.id {
		errf("create with the key %q of %s: want a DuplicateError naming it, got %v", holder.key, holder.id, err)
		return
	}
	p.acks.Add(1)
	p.refused.Add(1)
}

func (p *powerLoss) update(ctx context.Context, s *Store, m *plMsg, next *message.Message, d store.Durability, errf func(string, ...any)) {
	want := encode(m.cur)
	p.cut.RLock()
	m.hist = append(m.hist, encode(next))
	m.started++
	p.cut.RUnlock()
	got, err := s.Update(ctx, m.id, d, func(x *message.Message) error {
		if have := encode(x); !bytes.Equal(have, want) {
			return fmt.Errorf("store has %s, the last write was %s", have, want)
		}
		*x = *next.Clone()
		return nil
	})
	if err != nil {
		errf("update %s: %v", m.id, err)
		return
	}
	if !bytes.Equal(encode(got), m.hist[m.started]) {
		errf("update %s answered %s, want %s", m.id, encode(got), m.hist[m.started])
	}
	p.cut.RLock()
	m.cur = next
	if d == store.Sync {
		m.acked = m.started
	}
	p.cut.RUnlock()
	p.acks.Add(1)
}

// remove deletes a finished message.
func (p *powerLoss) remove(ctx context.Context, s *Store, m *plMsg, errf func(string, ...any)) {
	p.cut.RLock()
	m.hist = append(m.hist, nil) // nil: deleted
	m.started++
	p.cut.RUnlock()
	err := s.Delete(ctx, m.id, func(x *message.Message) error {
		if !x.State.Final() {
			return fmt.Errorf("deleting a %s message", x.State)
		}
		return nil
	})
	if err != nil {
		errf("delete %s: %v", m.id, err)
		return
	}
	p.cut.RLock()
	m.acked, m.cur = m.started, nil
	p.cut.RUnlock()
	p.acks.Add(1)
}

// check compares the reopened store with what was known at the cut and
// returns what it holds.
func (p *powerLoss) check(ctx context.Context, s *Store, snap []plSnap) (map[string]*message.Message, []string) {
	var probs []string
	bad := func(format string, args ...any) { probs = append(probs, fmt.Sprintf(format, args...)) }
	// One scan instead of a Get per message: under -race Pebble records a
	// stack for every table a Get opens, which made Gets the whole cost.
	stored, err := scanMessages(s)
	if err != nil {
		return nil, []string{err.Error()}
	}
	recovered := map[string]*message.Message{}
	present := map[*plGroup]int{} // members stored
	unborn := map[*plGroup]int{}  // members absent because their Create did not finish
	tracked := map[string]bool{}
	for _, sn := range snap {
		tracked[sn.m.id] = true
		have, ok := stored[sn.m.id]
		deleting := sn.started >= 0 && sn.hist[sn.started] == nil
		switch {
		case !ok && sn.acked == 0 && !deleting:
			bad("lost submit: %s was acknowledged and is gone", sn.m.id)
		case !ok && sn.acked > 0 && !deleting:
			bad("lost message: %s had %d acknowledged writes and is gone", sn.m.id, sn.acked+1)
		case ok && deleting && sn.acked == sn.started:
			bad("lost delete: %s was deleted (acknowledged) and is back", sn.m.id)
			continue
		}
		if !ok {
			if sn.acked < 0 {
				unborn[sn.m.group]++
			}
			continue
		}
		if sn.m.refused {
			bad("refused submit stored: %s came in a Create refused for a duplicate key", sn.m.id)
			continue
		}
		var got message.Message
		if err := json.Unmarshal(have, &got); err != nil {
			bad("decode %s: %v", sn.m.id, err)
			continue
		}
		present[sn.m.group]++
		recovered[sn.m.id] = &got
		k := slices.IndexFunc(sn.hist, func(h []byte) bool { return bytes.Equal(h, have) })
		switch {
		case k < 0:
			bad("unknown state: %s is %s, which no writer wrote", sn.m.id, have)
		case k < sn.acked:
			bad("lost change: %s is back at write %d (%s %s v%d), write %d was acknowledged (%s)",
				sn.m.id, k, got.State, time.UnixMilli(got.DueMs).Format(time.StampMilli), got.Version, sn.acked, sn.hist[sn.acked])
		case k > sn.acked && k == sn.started:
			p.total.inFlightKept++ // written when the power went: either way is right
		case k > sn.acked:
			p.total.lazyKept++ // an acknowledged Lazy write
		}
	}
	for g, n := range present {
		if unborn[g] > 0 {
			bad("torn create: %d of the %d messages of one unfinished Create survived", n, len(g.msgs))
		}
	}
	// Get, the product's read, must agree with the scan on a sample.
	n := 0
	for id, m := range recovered {
		if n++; n > 20 {
			break
		}
		got, err := s.Get(ctx, id)
		if err != nil || !bytes.Equal(encode(got), encode(m)) {
			bad("get %s: %v, differs from the scan", id, err)
		}
	}
	probs = append(probs, checkIndexes(ctx, s, recovered, tracked)...)
	return recovered, probs
}

// scanMessages reads every stored message's JSON by id.
func scanMessages(s *Store) (map[string][]byte, error) {
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte("m/"), UpperBound: prefixEnd([]byte("m/"))})
	if err != nil {
		return nil, fmt.Errorf("scan: %w", err)
	}
	defer it.Close()
	out := map[string][]byte{}
	for ok := it.First(); ok; ok = it.Next() {
		out[string(it.Key()[2:])] = slices.Clone(it.Value())
	}
	if err := it.Error(); err != nil {
		return nil, fmt.Errorf("scan: %w", err)
	}
	return out, nil
}

// checkIndexes compares Due, Counts and every index key with the
// recovered messages (derived here, not by writeIndexes).
func checkIndexes(ctx context.Context, s *Store, msgs map[string]*message.Message, tracked map[string]bool) []string {
	var probs []string
	bad := func(format string, args ...any) { probs = append(probs, fmt.Sprintf(format, args...)) }

	es, err := s.Due(ctx, store.Entry{}, math.MaxInt64, math.MaxInt32)
	if err != nil {
		return []string{fmt.Sprintf("due: %v", err)}
	}
	inDue := map[string]store.Entry{}
	for _, e := range es {
		m := msgs[e.ID]
		switch {
		case m == nil:
			bad("index: Due lists %s, which is not stored", e.ID)
		case !m.State.Pending():
			bad("index: Due lists %s, which is %s", e.ID, m.State)
		case e.DueMs != m.DueMs || e.Version != m.Version:
			bad("index: Due lists %s at %d v%d, the message is at %d v%d", e.ID, e.DueMs, e.Version, m.DueMs, m.Version)
		}
		if _, dup := inDue[e.ID]; dup {
			bad("index: Due lists %s twice", e.ID)
		}
		inDue[e.ID] = e
	}
	want := store.Counts{}
	for id, m := range msgs {
		if _, ok := inDue[id]; m.State.Pending() && !ok {
			bad("index: pending %s (%s) is not in Due", id, m.State)
		}
		if want[m.Topic] == nil {
			want[m.Topic] = map[message.State]int64{}
		}
		want[m.Topic][m.State]++
	}
	cnt, err := s.Counts(ctx)
	if err != nil {
		return append(probs, fmt.Sprintf("counts: %v", err))
	}
	if fmt.Sprint(cnt) != fmt.Sprint(want) {
		bad("index: Counts says %v, the messages are %v", cnt, want)
	}

	// Every key in the database, against the keys the messages imply.
	expect := map[string]string{}
	for id, m := range msgs {
		expect[string(msgKey(id))] = "message"
		expect[string(topicStateKey(m.Topic, m.State, id))] = ""
		expect[string(topicAllKey(m.Topic, id))] = ""
		if m.State.Pending() {
			expect[string(dueKey(m.DueMs, id))] = string(binary.BigEndian.AppendUint64(nil, m.Version))
		}
		if m.State == message.StateDelivered || m.State == message.StateCancelled {
			expect[string(purgeKey(m.DoneMs, id))] = ""
		}
		if m.IdemKey != "" {
			expect[string(idemKey(m.Topic, m.IdemKey))] = id
		}
	}
	it, err := s.db.NewIter(nil)
	if err != nil {
		return append(probs, fmt.Sprintf("iter: %v", err))
	}
	defer it.Close()
	for ok := it.First(); ok; ok = it.Next() {
		k := string(it.Key())
		if strings.HasPrefix(k, "c/") {
			continue // checked through Counts
		}
		v, ok := expect[k]
		switch {
		case !ok:
			if strings.HasPrefix(k, "m/") && !tracked[k[2:]] {
				bad("index: message %s is stored, but the test never wrote it or deleted it in an earlier round", k[2:])
			} else {
				bad("index: stray key %q", k)
			}
		case v != "message" && v != string(it.Value()):
			bad("index: key %q holds %q, want %q", k, it.Value(), v)
		}
		delete(expect, k)
	}
	if err := it.Error(); err != nil {
		bad("iter: %v", err)
	}
	for k := range expect {
		bad("index: missing key %q", k)
	}
	return probs
}

// rebase makes what the reopened store holds the starting point of the
// next round: a recovered state counts as acknowledged from now on.
func (p *powerLoss) rebase(recovered map[string]*message.Message) {
	for w, l := range p.ledgers {
		var keep []*plMsg
		for _, m := range l {
			got := recovered[m.id]
			if got == nil {
				continue
			}
			have := encode(got)
			k := slices.IndexFunc(m.hist, func(h []byte) bool { return bytes.Equal(h, have) })
			m.hist, m.started, m.acked, m.cur = m.hist[:k+1], k, k, got
			keep = append(keep, m)
		}
		p.ledgers[w] = keep
	}
}

func plSeeds(t *testing.T) []uint64 {
	if v := os.Getenv("SORAKAQ_POWERLOSS_SEED"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("SORAKAQ_POWERLOSS_SEED: %v", err)
		}
		return []uint64{n}
	}
	if testing.Short() {
		return []uint64{1}
	}
	return []uint64{1, 2, 3}
}

func plRounds(t *testing.T, def int) int {
	if v := os.Getenv("SORAKAQ_POWERLOSS_ROUNDS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("SORAKAQ_POWERLOSS_ROUNDS: %q", v)
		}
		return n
	}
	if testing.Short() {
		return max(def/2, 1)
	}
	return def
}

// TestPowerLoss: every acknowledged submit, cancel and delay change
// survives any number of power cuts, with the indexes in agreement.
func TestPowerLoss(t *testing.T) {
	for _, seed := range plSeeds(t) {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			start := time.Now()
			p := &powerLoss{t: t, seed: seed, rounds: plRounds(t, 12), writers: 4}
			probs := p.run()
			for _, pr := range probs {
				t.Error(pr)
			}
			if p.total.cuts == 0 {
				t.Fatal("no power cut was made")
			}
			t.Logf("seed %d: %d cuts in %v; %d writes acknowledged (%d of them duplicate-key refusals); %d messages checked after cuts; "+
				"newer than the last acknowledged Sync write after a cut: %d written as the power went, %d acknowledged Lazy writes",
				seed, p.total.cuts, time.Since(start).Round(time.Millisecond), p.total.acked, p.refused.Load(), p.total.carried,
				p.total.inFlightKept, p.total.lazyKept)
		})
	}
}

// TestPowerLossSeesMissingFsync shows the check can fail: with the fsync
// taken out of the writes that need it, acknowledged work must be
// reported lost.
func TestPowerLossSeesMissingFsync(t *testing.T) {
	for _, tc := range []struct {
		name string
		mode unsyncMode
		want string
	}{
		{"no write synced", unsyncAll, "lost submit:"},
		{"updates not synced", unsyncUpdates, "lost change:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := &powerLoss{t: t, seed: 7, rounds: 20, writers: 4, unsync: tc.mode, until: tc.want}
			probs := p.run()
			n := 0
			for _, pr := range probs {
				if strings.Contains(pr, tc.want) {
					n++
				}
			}
			if n == 0 {
				t.Fatalf("the fsync was taken out and the check saw no %q (%d problems: %q)", tc.want, len(probs), probs)
			}
			t.Logf("%d %q problems over %d cuts, e.g. %s", n, tc.want, p.total.cuts, probs[0])
		})
	}
}

// TestPowerLossCheckerSeesIndexDrift shows the index half of the check can
// fail: each kind of drift put in by hand must be reported.
func TestPowerLossCheckerSeesIndexDrift(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name  string
		drift func(s *Store, a, b *message.Message) error
		want  string
	}{
		{"schedule entry missing", func(s *Store, a, _ *message.Message) error {
			return s.db.Delete(dueKey(a.DueMs, a.ID), pebble.Sync)
		}, "is not in Due"},
		{"schedule entry stale", func(s *Store, a, _ *message.Message) error {
			return s.db.Set(dueKey(a.DueMs+1, a.ID), encodeInt(1), pebble.Sync)
		}, "Due lists %s at"},
		{"counter off", func(s *Store, _, b *message.Message) error {
			return s.db.Merge(counterKey(b.Topic, b.State), encodeInt(1), pebble.Sync)
		}, "Counts says"},
		{"listing key stray", func(s *Store, a, _ *message.Message) error {
			return s.db.Set(topicStateKey(a.Topic, message.StateDead, a.ID), nil, pebble.Sync)
		}, "stray key"},
		{"idempotency key lost", func(s *Store, _, b *message.Message) error {
			return s.db.Delete(idemKey(b.Topic, b.IdemKey), pebble.Sync)
		}, "missing key"},
		{"idempotency key names another message", func(s *Store, a, b *message.Message) error {
			return s.db.Set(idemKey(b.Topic, b.IdemKey), []byte(a.ID), pebble.Sync)
		}, "holds"},
		{"message nobody wrote", func(s *Store, _, _ *message.Message) error {
			return s.db.Set(msgKey("ghost"), []byte(`{}`), pebble.Sync)
		}, "never wrote it"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Open(Options{Dir: plDir, FS: vfs.NewMem()})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			a, b := msg("t1", 5000), msg("t2", 6000)
			b.IdemKey = "k"
			if err := s.Create(ctx, a, b); err != nil {
				t.Fatal(err)
			}
			msgs := map[string]*message.Message{a.ID: a, b.ID: b}
			tracked := map[string]bool{a.ID: true, b.ID: true}
			if probs := checkIndexes(ctx, s, msgs, tracked); len(probs) != 0 {
				t.Fatalf("before the drift: %q", probs)
			}
			if err := tc.drift(s, a, b); err != nil {
				t.Fatal(err)
			}
			want := tc.want
			if strings.Contains(want, "%s") {
				want = fmt.Sprintf(want, a.ID)
			}
			probs := checkIndexes(ctx, s, msgs, tracked)
			if !slices.ContainsFunc(probs, func(p string) bool { return strings.Contains(p, want) }) {
				t.Fatalf("drift %q not reported as %q: %q", tc.name, want, probs)
			}
		})
	}
}
