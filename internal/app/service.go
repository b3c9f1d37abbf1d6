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

// Runner is a process's services: Main starts them and returns once they
// serve, Err reports a failure after that, Exit shuts down in order.
type Runner interface {
	Main() error
	Err() <-chan error
	Exit() error
}

// service is one distributed role: an HTTP listener (health, metrics and
// the role's API), background loops under one context and one WaitGroup,
// and shutdown steps run in order (stop intake, persist, close).
type service struct {
	name    string
	log     *zap.Logger
	timeout time.Duration
	http    *httpapi.Server

	start func(ctx context.Context) error // after the listener serves
	stops []func(ctx context.Context) error

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	errc   chan error
	once   sync.Once
}

func newService(name, listen string, e *gin.Engine, ho httpapi.Options, timeout time.Duration, log *zap.Logger) (*service, error) {
	if ho.Log == nil {
		ho.Log = log
	}
	hs, err := httpapi.Listen(name, listen, e, ho, "", "")
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &service{name: name, log: log, timeout: timeout, http: hs, ctx: ctx, cancel: cancel, errc: make(chan error, 4)}, nil
}

// Addr is the bound address.
func (s *service) Addr() string { return s.http.Addr() }

// loop runs f in the background until Exit.
func (s *service) loop(f func(ctx context.Context)) {
	s.wg.Add(1)
	go func() { defer s.wg.Done(); f(s.ctx) }()
}

// onStop adds a shutdown step; steps run in the order added.
func (s *service) onStop(f func(ctx context.Context) error) { s.stops = append(s.stops, f) }

func (s *service) Main() error {
	go func() {
		if err := s.http.Serve(); err != nil {
			s.errc <- err
		}
	}()
	if s.start != nil {
		if err := s.start(s.ctx); err != nil {
			return fmt.Errorf("%s: start: %w", s.name, err)
		}
	}
	s.log.Info("sorakaQ "+s.name+" started", zap.String("addr", s.Addr()))
	return nil
}

func (s *service) Err() <-chan error { return s.errc }

// Exit: stop taking requests, stop the loops, then the role's steps.
func (s *service) Exit() error {
	var errs []error
	s.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
		defer cancel()
		if err := s.http.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("%s: http shutdown: %w", s.name, err))
		}
		s.cancel()
		s.wg.Wait()
		for _, f := range s.stops {
			if err := f(ctx); err != nil {
				errs = append(errs, err)
			}
		}
		s.log.Info("sorakaQ " + s.name + " stopped")
	})
	return errors.Join(errs...)
}
