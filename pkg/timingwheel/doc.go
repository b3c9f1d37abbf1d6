// Package timingwheel implements a hierarchical timing wheel for scheduling
// very many timers (delayed messages) with millisecond resolution, following
// the design of Kafka's purgatory (kafka.utils.timer.TimingWheel and
// SystemTimer).
//
// # Design
//
// Level 0 is a circular array of WheelSize buckets, each covering one Tick
// (1 ms by default), so level 0 spans Tick*WheelSize (512 ms by default).
// A timer whose expiration falls beyond that span is handed to an overflow
// wheel whose tick is the whole span of the level below (512 ms, then
// ~262 s, then ~37 h, then ~2.2 years, ...). Overflow wheels are created
// lazily, only when a timer needs them, so a wheel holding only short
// timers never pays for the upper levels, and a 7-day timer needs just four
// levels of 512 buckets.
//
// Every bucket is an intrusive doubly linked list of timers plus the bucket's
// expiration (the start of the time range it covers). Adding a timer is
// O(1): compute the level and slot, link the timer in. Stop is O(1): unlink
// it. Reset is Stop followed by Add under the same lock.
//
// Buckets, not timers, are put on a delay queue: a min-heap of buckets keyed
// by bucket expiration. A bucket is pushed only when it gets a new expiration
// (it was empty and a timer lands in it), and it is popped when its time
// comes, so the heap holds at most one entry per non-empty bucket (a few
// thousand at most) no matter how many timers are pending: heap work is
// O(log buckets) and happens once per bucket, not per timer. Empty ticks
// cost nothing, because the driver (Run) sleeps until the head of the delay
// queue instead of ticking every millisecond, and an idle wheel never wakes
// up. When a timer is stopped and its bucket becomes empty the bucket is
// removed from the heap, so cancelled timers leave no stale entries behind.
//
// When a bucket expires (Advance), the wheel's clock is moved to the bucket's
// expiration and each of its timers is re-inserted: timers that are now due
// are fired, the others cascade down into a finer level (Kafka's "flush").
// A timer cascades at most once per level, so the amortised cost of firing
// is O(levels) per timer.
//
// # Guarantees
//
// Timestamps are Unix milliseconds (int64). A timer never fires before its
// expiration: it fires during an Advance(nowMs) call with nowMs >= its
// expiration. With the default 1 ms tick it fires during the first such
// call. With a coarser Tick, expirations are rounded up to the next multiple
// of Tick, so a timer may fire up to Tick-1 ms late but never early (Kafka
// instead rounds down and may fire early). A timer added (or reset) with an
// expiration at or before the wheel's current time is kept on a separate
// "overdue" list and fires on the next Advance that reaches it; it is never
// dropped.
//
// Within one Advance call timers fire in non-decreasing expiration order,
// except that timers sharing a level-0 bucket may fire in any order.
//
// Fire callbacks run without the wheel's lock held, so they may call Add,
// Stop and Reset. A timer's fate is decided under the lock: once Advance has
// taken a timer for firing, Stop and Reset on it return false; if Stop
// returns true the timer will never fire.
//
// The wheel is safe for concurrent use; one mutex guards it and critical
// sections are O(1) except Advance, which holds the lock while collecting
// the due timers (not while firing them). No goroutine is created per timer:
// a single Run goroutine (or a caller of Advance with its own clock) drives
// the whole wheel.
package timingwheel
