package timingwheel

import (
	"context"
	"fmt"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Options configures a Wheel. The zero value gives a 1 ms tick, 512 buckets
// per level and the current time as the starting clock.
type Options struct {
	Tick      time.Duration // level-0 tick, default 1ms (must be whole ms >= 1ms)
	WheelSize int           // buckets per level, default 512
	StartMs   int64         // initial "current time" in unix ms; 0 = time.Now()
}

const (
	defaultWheelSize = 512
	noExpiration     = math.MinInt64
	maxSpare         = 1 << 12        // largest fire buffer kept between Advance calls
	maxSleepMs       = int64(1) << 40 // cap on one Run sleep (~34 years)
)

// Timer is a scheduled value. It is created by Wheel.Add and is pending until
// it fires or is stopped.
type Timer[T any] struct {
	w        *Wheel[T]
	b        *bucket[T] // list the timer is linked into; nil once fired or stopped
	prev     *Timer[T]
	next     *Timer[T]
	expireAt atomic.Int64 // written under w.mu, read lock-free by ExpireAt
	value    T
}

// Value returns the value the timer was scheduled with.
func (t *Timer[T]) Value() T { return t.value }

// ExpireAt returns the timer's expiration in Unix milliseconds (the latest one
// set by Reset).
func (t *Timer[T]) ExpireAt() int64 { return t.expireAt.Load() }

// Stop cancels a pending timer. It reports true if the timer was pending and
// is now removed (it will never fire), false if it already fired (or was
// taken for firing by a concurrent Advance) or was already stopped.
func (t *Timer[T]) Stop() bool {
	w := t.w
	w.mu.Lock()
	defer w.mu.Unlock()
	if t.b == nil {
		return false
	}
	w.unlink(t)
	w.count--
	return true
}

// bucket is a doubly linked list of timers. Level buckets also carry an
// expiration and a position in the delay queue.
type bucket[T any] struct {
	head, tail *Timer[T]
	expiration int64 // start of the covered range; noExpiration when not queued
	index      int   // position in the delay queue, -1 when not queued
}

func (b *bucket[T]) push(t *Timer[T]) {
	t.b = b
	t.prev = b.tail
	t.next = nil
	if b.tail != nil {
		b.tail.next = t
	} else {
		b.head = t
	}
	b.tail = t
}

func (b *bucket[T]) remove(t *Timer[T]) {
	if t.prev != nil {
		t.prev.next = t.next
	} else {
		b.head = t.next
	}
	if t.next != nil {
		t.next.prev = t.prev
	} else {
		b.tail = t.prev
	}
	t.prev, t.next, t.b = nil, nil, nil
}

// level is one wheel of the hierarchy.
type level[T any] struct {
	tick     int64 // ms covered by one bucket
	interval int64 // tick*size, saturated at math.MaxInt64
	cur      int64 // current time rounded down to a multiple of tick
	buckets  []bucket[T]
}

func newLevel[T any](tick int64, size int, startMs int64) *level[T] {
	interval := int64(math.MaxInt64)
	if tick <= math.MaxInt64/int64(size) {
		interval = tick * int64(size)
	}
	l := &level[T]{
		tick:     tick,
		interval: interval,
		cur:      floorTo(startMs, tick),
		buckets:  make([]bucket[T], size),
	}
	for i := range l.buckets {
		l.buckets[i].expiration = noExpiration
		l.buckets[i].index = -1
	}
	return l
}

// Wheel is a hierarchical timing wheel. Create it with New.
type Wheel[T any] struct {
	mu     sync.Mutex
	tick   int64 // level-0 tick in ms
	size   int
	levels []*level[T]  // levels[0] is the finest; overflow levels appended lazily
	queue  []*bucket[T] // delay queue: min-heap of level buckets by expiration
	count  int          // pending timers

	// overdue holds timers added or reset with an expiration at or before
	// the current time (and, defensively, anything that would otherwise fire
	// early). They fire on the first Advance whose nowMs reaches them.
	overdue         bucket[T]
	overdueMin      int64 // lower bound of expirations in overdue
	overdueMinStale bool

	spare []*Timer[T] // reusable fire buffer

	// Run coordination.
	sleepUntil int64 // expiration Run sleeps for; math.MinInt64 = nobody to wake
	wake       chan struct{}
	runIters   atomic.Int64 // Run loop iterations (test hook)
}

// New creates a wheel. It panics if opts.Tick is not a whole number of
// milliseconds >= 1ms, opts.WheelSize is negative or 1, or opts.StartMs is
// negative.
func New[T any](opts Options) *Wheel[T] {
	tick := opts.Tick
	if tick == 0 {
		tick = time.Millisecond
	}
	if tick < time.Millisecond || tick%time.Millisecond != 0 {
		panic(fmt.Sprintf("timingwheel: Tick must be a whole number of milliseconds >= 1ms, got %v", opts.Tick))
	}
	size := opts.WheelSize
	if size == 0 {
		size = defaultWheelSize
	}
	if size < 2 {
		panic(fmt.Sprintf("timingwheel: WheelSize must be >= 2, got %d", opts.WheelSize))
	}
	start := opts.StartMs
	if start < 0 {
		panic(fmt.Sprintf("timingwheel: StartMs must be >= 0, got %d", start))
	}
	if start == 0 {
		start = time.Now().UnixMilli()
	}
	w := &Wheel[T]{
		tick:       tick.Milliseconds(),
		size:       size,
		overdueMin: math.MaxInt64,
		sleepUntil: math.MinInt64,
		wake:       make(chan struct{}, 1),
	}
	w.overdue.expiration = noExpiration
	w.overdue.index = -1
	w.levels = []*level[T]{newLevel[T](w.tick, size, start)}
	return w
}

// Add schedules v to fire at expireAtMs (unix ms). An expiration at or before
// the wheel's current time fires on the next Advance/Run step (never dropped).
func (w *Wheel[T]) Add(expireAtMs int64, v T) *Timer[T] {
	t := &Timer[T]{w: w, value: v}
	t.expireAt.Store(expireAtMs)
	w.mu.Lock()
	wake := w.insert(t)
	w.count++
	w.mu.Unlock()
	if wake {
		w.signal()
	}
	return t
}

// Reset moves a pending timer to a new expiration (earlier or later). It
// reports false if the timer already fired or was stopped; then nothing is
// scheduled.
func (w *Wheel[T]) Reset(t *Timer[T], expireAtMs int64) bool {
	if t.w != w {
		panic("timingwheel: Reset of a timer that belongs to another wheel")
	}
	w.mu.Lock()
	if t.b == nil {
		w.mu.Unlock()
		return false
	}
	w.unlink(t)
	t.expireAt.Store(expireAtMs)
	wake := w.insert(t)
	w.mu.Unlock()
	if wake {
		w.signal()
	}
	return true
}

// Len is the number of pending timers.
func (w *Wheel[T]) Len() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.count
}

// NextExpiry returns the earliest bucket expiration (ms), ok=false when
// nothing is pending. It is a lower bound of the earliest pending timer's
// expiration: exact for timers in level 0, the start of the bucket's range
// for timers still in an overflow level. Advance(next-1) fires nothing.
func (w *Wheel[T]) NextExpiry() (int64, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.nextExpiryLocked()
}

func (w *Wheel[T]) nextExpiryLocked() (int64, bool) {
	if w.count == 0 {
		return 0, false
	}
	next := int64(math.MaxInt64)
	ok := false
	if len(w.queue) > 0 {
		next, ok = w.queue[0].expiration, true
	}
	if w.overdue.head != nil {
		if w.overdueMinStale {
			w.recomputeOverdueMin()
		}
		if w.overdueMin < next {
			next = w.overdueMin
		}
		ok = true
	}
	return next, ok
}

// Advance moves the wheel's clock to nowMs and calls fire (without holding
// the wheel's lock) for every timer with expireAt <= nowMs (with a Tick
// coarser than 1ms: with expireAt rounded up to a multiple of Tick <= nowMs),
// in non-decreasing expiration order within one call as far as bucket
// granularity allows. The clock never moves backwards: an Advance with an
// earlier nowMs only fires timers that are due at nowMs. fire may be nil.
func (w *Wheel[T]) Advance(nowMs int64, fire func(*Timer[T])) {
	w.mu.Lock()
	out := w.spare[:0]
	w.spare = nil

	// Overdue timers are all at or before the clock, hence before any
	// queued bucket.
	if w.overdue.head != nil {
		n := len(out)
		minLeft := int64(math.MaxInt64)
		for t := w.overdue.head; t != nil; {
			next := t.next
			if e := t.expireAt.Load(); e <= nowMs {
				w.overdue.remove(t)
				out = append(out, t)
			} else if e < minLeft {
				minLeft = e
			}
			t = next
		}
		w.overdueMin, w.overdueMinStale = minLeft, false
		if len(out)-n > 1 {
			slices.SortFunc(out[n:], func(a, b *Timer[T]) int {
				return cmpInt64(a.expireAt.Load(), b.expireAt.Load())
			})
		}
	}

	wake := false
	for len(w.queue) > 0 && w.queue[0].expiration <= nowMs {
		b := w.popBucket()
		w.advanceClock(b.expiration)
		head := b.head
		b.head, b.tail = nil, nil
		b.expiration = noExpiration
		for t := head; t != nil; {
			next := t.next
			t.prev, t.next, t.b = nil, nil, nil
			if w.due(t, nowMs) {
				out = append(out, t)
			} else if w.insert(t) { // cascade into a finer level
				wake = true
			}
			t = next
		}
	}
	w.advanceClock(nowMs)
	w.count -= len(out)
	w.mu.Unlock()
	if wake {
		w.signal()
	}

	if fire != nil {
		for _, t := range out {
			fire(t)
		}
	}
	if cap(out) <= maxSpare {
		clear(out)
		w.mu.Lock()
		if cap(out) > cap(w.spare) {
			w.spare = out[:0]
		}
		w.mu.Unlock()
	}
}

// Run drives the wheel in real time until ctx is done: it sleeps until the
// next bucket expiration (or until an Add/Reset makes an earlier one), then
// calls Advance(time.Now() in ms). fire is called from Run's goroutine and
// must be quick (it should hand off to a channel). An idle wheel causes no
// wakeups. At most one Run may be active per wheel.
func (w *Wheel[T]) Run(ctx context.Context, fire func(*Timer[T])) {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	defer func() {
		w.mu.Lock()
		w.sleepUntil = math.MinInt64
		w.mu.Unlock()
	}()
	for {
		if ctx.Err() != nil {
			return
		}
		w.runIters.Add(1)
		w.Advance(time.Now().UnixMilli(), fire)

		w.mu.Lock()
		next, ok := w.nextExpiryLocked()
		if ok {
			w.sleepUntil = next
		} else {
			w.sleepUntil = math.MaxInt64
		}
		w.mu.Unlock()

		if ok {
			ms := next - time.Now().UnixMilli()
			if ms <= 0 {
				continue
			}
			timer.Reset(time.Duration(min(ms, maxSleepMs)) * time.Millisecond)
			select {
			case <-ctx.Done():
				return
			case <-timer.C:
			case <-w.wake:
				timer.Stop()
			}
		} else {
			select {
			case <-ctx.Done():
				return
			case <-w.wake:
			}
		}
		// Awake: Adds need not signal until the next sleep is computed.
		w.mu.Lock()
		w.sleepUntil = math.MinInt64
		w.mu.Unlock()
	}
}

// signal wakes Run (non-blocking; the channel has a buffer of one).
func (w *Wheel[T]) signal() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// due reports whether a timer taken out of an expired bucket fires now. The
// clock has been advanced to that bucket's expiration (<= nowMs).
func (w *Wheel[T]) due(t *Timer[T], nowMs int64) bool {
	e := t.expireAt.Load()
	return w.roundUp(e) <= w.levels[0].cur && e <= nowMs
}

// insert links a timer (t.b == nil) into the overdue list or a level bucket.
// It reports whether a Run sleeping for a later expiration must be woken.
// Caller holds w.mu.
func (w *Wheel[T]) insert(t *Timer[T]) bool {
	e := t.expireAt.Load()
	r := w.roundUp(e)
	if r <= w.levels[0].cur || r < e {
		// Already due (or so far in the future that rounding overflowed:
		// park it where it fires only once nowMs >= e).
		w.overdue.push(t)
		if e < w.overdueMin {
			w.overdueMin = e
		}
		return w.wakeFor(e)
	}
	for i := 0; ; i++ {
		if i == len(w.levels) {
			lower := w.levels[i-1]
			w.levels = append(w.levels, newLevel[T](lower.interval, w.size, lower.cur))
		}
		l := w.levels[i]
		// r-l.cur >= l.tick holds here (for i>0 because it did not fit below).
		if l.interval == math.MaxInt64 || r-l.cur < l.interval {
			vid := r / l.tick
			b := &l.buckets[vid%int64(w.size)]
			b.push(t)
			exp := vid * l.tick
			if b.expiration != exp {
				b.expiration = exp
				w.offer(b)
				return w.wakeFor(exp)
			}
			return false
		}
	}
}

func (w *Wheel[T]) wakeFor(exp int64) bool {
	if exp < w.sleepUntil {
		w.sleepUntil = math.MinInt64 // Run recomputes after waking
		return true
	}
	return false
}

// unlink removes a pending timer from its list; an emptied level bucket
// leaves the delay queue. Caller holds w.mu.
func (w *Wheel[T]) unlink(t *Timer[T]) {
	b := t.b
	b.remove(t)
	if b == &w.overdue {
		if b.head == nil {
			w.overdueMin, w.overdueMinStale = math.MaxInt64, false
		} else if t.expireAt.Load() <= w.overdueMin {
			w.overdueMinStale = true
		}
		return
	}
	if b.head == nil && b.index >= 0 {
		w.removeBucket(b)
		b.expiration = noExpiration
	}
}

func (w *Wheel[T]) recomputeOverdueMin() {
	m := int64(math.MaxInt64)
	for t := w.overdue.head; t != nil; t = t.next {
		if e := t.expireAt.Load(); e < m {
			m = e
		}
	}
	w.overdueMin, w.overdueMinStale = m, false
}

// advanceClock moves every level's clock forward to timeMs (rounded down to
// the level's tick), as Kafka's TimingWheel.advanceClock.
func (w *Wheel[T]) advanceClock(timeMs int64) {
	for _, l := range w.levels {
		if timeMs <= l.cur || timeMs-l.cur < l.tick {
			return
		}
		l.cur = floorTo(timeMs, l.tick)
	}
}

// roundUp rounds an expiration up to a multiple of the level-0 tick so that
// the level-0 bucket expiration never precedes the timer's expiration. On
// overflow it returns a value < e.
func (w *Wheel[T]) roundUp(e int64) int64 {
	if w.tick == 1 {
		return e
	}
	f := e / w.tick * w.tick // truncates toward zero: the ceiling for e < 0
	if f == e || e < 0 {
		return f
	}
	if f > math.MaxInt64-w.tick {
		return f
	}
	return f + w.tick
}

func floorTo(v, m int64) int64 {
	r := v % m
	if r < 0 {
		r += m
	}
	return v - r
}

func cmpInt64(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Delay queue: a binary min-heap of buckets keyed by expiration. Each bucket
// is in it at most once (index >= 0).

func (w *Wheel[T]) offer(b *bucket[T]) {
	if b.index >= 0 { // expiration changed while queued: fix in place
		w.fix(b.index)
		return
	}
	b.index = len(w.queue)
	w.queue = append(w.queue, b)
	w.up(b.index)
}

func (w *Wheel[T]) popBucket() *bucket[T] {
	q := w.queue
	n := len(q) - 1
	b := q[0]
	w.swap(0, n)
	q[n] = nil
	w.queue = q[:n]
	if n > 0 {
		w.down(0)
	}
	b.index = -1
	return b
}

func (w *Wheel[T]) removeBucket(b *bucket[T]) {
	i := b.index
	n := len(w.queue) - 1
	if i != n {
		w.swap(i, n)
	}
	w.queue[n] = nil
	w.queue = w.queue[:n]
	if i != n {
		w.fix(i)
	}
	b.index = -1
}

func (w *Wheel[T]) fix(i int) {
	if !w.down(i) {
		w.up(i)
	}
}

func (w *Wheel[T]) swap(i, j int) {
	q := w.queue
	q[i], q[j] = q[j], q[i]
	q[i].index = i
	q[j].index = j
}

func (w *Wheel[T]) up(j int) {
	q := w.queue
	for j > 0 {
		i := (j - 1) / 2
		if q[i].expiration <= q[j].expiration {
			break
		}
		w.swap(i, j)
		j = i
	}
}

func (w *Wheel[T]) down(i0 int) bool {
	q := w.queue
	n := len(q)
	i := i0
	for {
		j := 2*i + 1
		if j >= n {
			break
		}
		if r := j + 1; r < n && q[r].expiration < q[j].expiration {
			j = r
		}
		if q[i].expiration <= q[j].expiration {
			break
		}
		w.swap(i, j)
		i = j
	}
	return i > i0
}
