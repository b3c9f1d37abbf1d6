package app

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/gin-gonic/gin"
	"go.uber.org/zap"

	"github.com/sorakaq/sorakaq/internal/httpapi"
)

// Runner is what a command runs: the all-in-one, one distributed role, or
// every role in one process.
type Runner interface {
	// Start starts the parts in order and returns once every one runs; it
	// does not wait for them to end (Failed and Stop do).
	Start(ctx context.Context) error
	// Failed delivers the error of a part that stopped on its own after
	// Start (a listener that could not serve, the Kafka consumer). It is
	// closed once Stop has returned.
	Failed() <-chan error
	// Stop shuts down in order: stop taking requests (every listener that
	// serves: those in progress finish), stop the started parts, last
	// started first, then close what the constructor opened, last opened
	// first. A Runner that was built and never started (or whose Start
	// failed) is closed by Stop too. Idempotent; not while Start runs.
	Stop(ctx context.Context) error
}

// process is the one shape of every Runner. Its constructor opens what
// the process needs and says what to close (onClose: a stack, so an
// error half way closes whatever was opened before it, last first, see
// closeOnError) and which parts run, in order (serve, step, loops);
// nothing runs before Start.
type process struct {
	name    string
	log     *zap.Logger
	timeout time.Duration // bounds Stop (shutdown.timeout); 0: Stop's ctx alone
	parts   []part
	started int    // parts started
	running func() // after every part started (the start log lines)
	closers []func(ctx context.Context) error

	wg       sync.WaitGroup // the goroutines the process started itself
	errc     chan error
	stopOnce sync.Once
	stopErr  error
}

// part is one thing a process runs: a listener (intake), a step (start,
// and what undoes it), or background loops.
type part struct {
	name   string
	intake bool // a listener: stopped before every other part
	start  func(ctx context.Context) error
	stop   func(ctx context.Context) error // nil: nothing to undo
}

func newProcess(name string, log *zap.Logger, timeout time.Duration) *process {
	return &process{name: name, log: log, timeout: timeout, errc: make(chan error, 1)}
}

// onClose pushes what closes something just opened.
func (p *process) onClose(f func(ctx context.Context) error) { p.closers = append(p.closers, f) }

// closeOnError, deferred by a constructor with its named error, closes
// what the constructor opened when it fails.
func (p *process) closeOnError(err *error) {
	if *err == nil {
		return
	}
	if cerr := p.Stop(context.Background()); cerr != nil {
		p.log.Warn("closing after a failed start", zap.Error(cerr))
	}
}

// background is a context for what the constructor starts and runs until
// the process closes (the cluster view's watches).
func (p *process) background() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	p.onClose(func(context.Context) error { cancel(); return nil })
	return ctx
}

// listen opens a listener for h (closed with the process); serve makes it
// a part.
func (p *process) listen(name, addr string, h *gin.Engine, o httpapi.Options, cert, key string) (*httpapi.Server, error) {
	if o.Log == nil {
		o.Log = p.log
	}
	hs, err := httpapi.Listen(name, addr, h, o, cert, key)
	if err != nil {
		return nil, err
	}
	p.onClose(func(context.Context) error { return hs.Close() })
	return hs, nil
}

// serve adds a part that serves hs from its place in the start order; it
// is shut down before every other part.
func (p *process) serve(name string, hs *httpapi.Server) {
	p.parts = append(p.parts, part{name: name, intake: true,
		start: func(context.Context) error {
			p.wg.Go(func() {
				if err := hs.Serve(); err != nil {
					p.fail(err)
				}
			})
			return nil
		},
		stop: hs.Shutdown})
}

// step adds a part: start runs in order, stop (if not nil) undoes it.
func (p *process) step(name string, start, stop func(ctx context.Context) error) {
	p.parts = append(p.parts, part{name: name, start: start, stop: stop})
}

// loops adds a part that runs each f in its own goroutine until the part
// stops (all at once; stopping waits for every f to return).
func (p *process) loops(name string, fs ...func(ctx context.Context)) {
	var cancel context.CancelFunc
	var wg sync.WaitGroup
	p.step(name, func(context.Context) error {
		var ctx context.Context
		ctx, cancel = context.WithCancel(context.Background())
		for _, f := range fs {
			wg.Go(func() { f(ctx) })
		}
		return nil
	}, func(context.Context) error {
		cancel()
		wg.Wait()
		return nil
	})
}

// fail reports a part that stopped on its own (the first is kept until
// read; Stop follows anyway).
func (p *process) fail(err error) {
	select {
	case p.errc <- err:
	default:
	}
}

// forward reports the failures of another Runner as this one's, until it
// stopped.
func (p *process) forward(r Runner) {
	p.wg.Go(func() {
		for err := range r.Failed() {
			p.fail(err)
		}
	})
}

func (p *process) Start(ctx context.Context) error {
	for _, pt := range p.parts[p.started:] {
		if err := pt.start(ctx); err != nil {
			return fmt.Errorf("%s: %s: %w", p.name, pt.name, err)
		}
		p.started++
	}
	if p.running != nil {
		p.running()
	}
	return nil
}

func (p *process) Failed() <-chan error { return p.errc }

func (p *process) Stop(ctx context.Context) error {
	p.stopOnce.Do(func() {
		if p.timeout > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, p.timeout)
			defer cancel()
		}
		began := time.Now()
		var errs []error
		started := p.parts[:p.started]
		for _, intake := range []bool{true, false} {
			for i := len(started) - 1; i >= 0; i-- {
				if pt := started[i]; pt.intake == intake && pt.stop != nil {
					if err := pt.stop(ctx); err != nil {
						errs = append(errs, fmt.Errorf("%s: stop %s: %w", p.name, pt.name, err))
					}
				}
			}
		}
		for i := len(p.closers) - 1; i >= 0; i-- {
			if err := p.closers[i](ctx); err != nil {
				errs = append(errs, err)
			}
		}
		p.wg.Wait()
		close(p.errc)
		p.stopErr = errors.Join(errs...)
		if p.started > 0 {
			p.log.Info("sorakaQ "+p.name+" stopped", zap.Duration("took", time.Since(began)))
		}
	})
	return p.stopErr
}
