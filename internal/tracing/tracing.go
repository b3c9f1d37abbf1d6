// Package tracing makes sorakaQ's OpenTelemetry spans (tracing.enabled):
// the submit, each hop of its hand-over in the distributed mode, and each
// callback attempt, exported over OTLP/HTTP. Off by default, and then a
// nil *Tracer: callers test for nil before building anything, so tracing
// off costs a nil check on the hot paths and nothing else.
//
// Spans are joined by the W3C trace context sorakaQ already keeps with
// every message (package tracectx): the submit span's traceparent is what
// the message stores, so attempts made days later, by another process,
// are its children.
package tracing

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"
)

// DefaultServiceName is service.name when Config.ServiceName is "".
const DefaultServiceName = "sorakaq"

// Config is tracing.* of the configuration.
type Config struct {
	Enabled bool
	// OTLPEndpoint is the collector's OTLP/HTTP URL; a URL without a path
	// gets the standard /v1/traces.
	OTLPEndpoint string
	// SampleRatio is the share of new traces recorded (0..1); a submit
	// that carries a traceparent follows its sampled flag instead.
	SampleRatio float64
	// ServiceName is service.name of the spans' resource.
	ServiceName string
}

// Validate says what is wrong with c, naming the key.
func (c Config) Validate() error {
	if !c.Enabled {
		return nil
	}
	if c.SampleRatio < 0 || c.SampleRatio > 1 {
		return fmt.Errorf("tracing.sample_ratio: must be between 0 and 1, got %v", c.SampleRatio)
	}
	if _, err := endpointURL(c.OTLPEndpoint); err != nil {
		return err
	}
	return nil
}

func endpointURL(s string) (string, error) {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("tracing.otlp_endpoint: must be an http:// or https:// URL of an OTLP/HTTP collector (e.g. http://127.0.0.1:4318), got %q", s)
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = "/v1/traces"
	}
	return u.String(), nil
}

// Tracer makes spans. A nil *Tracer is tracing off: callers check for nil
// and then do nothing.
type Tracer struct {
	tp     *sdktrace.TracerProvider
	tracer trace.Tracer
	prop   propagation.TraceContext
}

// New builds the tracer of one process (role: all, receive, center,
// worker, admin); nil when tracing is off. Spans are batched and sent in
// the background: a collector that is down loses spans (the SDK logs it),
// never delays a submit or a callback.
func New(cfg Config, role string, log *zap.Logger) (*Tracer, error) {
	if !cfg.Enabled {
		return nil, nil
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	ep, _ := endpointURL(cfg.OTLPEndpoint)
	exp, err := otlptracehttp.New(context.Background(), otlptracehttp.WithEndpointURL(ep))
	if err != nil {
		return nil, fmt.Errorf("tracing: OTLP exporter for %s: %w", ep, err)
	}
	name := cfg.ServiceName
	if name == "" {
		name = DefaultServiceName
	}
	res := resource.NewWithAttributes(semconv.SchemaURL, semconv.ServiceName(name), attribute.String("sorakaq.role", role))
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp),
		sdktrace.WithResource(res),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(cfg.SampleRatio))),
	)
	log.Info("tracing on: spans go over OTLP/HTTP", zap.String("endpoint", ep), zap.Float64("sample_ratio", cfg.SampleRatio))
	return &Tracer{tp: tp, tracer: tp.Tracer("github.com/sorakaq/sorakaq")}, nil
}

// Shutdown sends the spans still batched, until ctx ends.
func (t *Tracer) Shutdown(ctx context.Context) error {
	if t == nil {
		return nil
	}
	if err := t.tp.Shutdown(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("tracing: flushing spans: %w", err)
	}
	return nil
}

// Span is a started span; End ends it.
type Span struct{ s trace.Span }

// SetInt records an integer attribute.
func (s Span) SetInt(key string, v int) {
	if s.s != nil {
		s.s.SetAttributes(attribute.Int(key, v))
	}
}

// End ends the span, marking it failed when err is not nil.
func (s Span) End(err error) {
	if s.s == nil {
		return
	}
	if err != nil {
		s.s.SetStatus(codes.Error, err.Error())
	}
	s.s.End()
}

// mapCarrier is a propagation carrier over two strings, so no header map
// is built.
type mapCarrier struct{ parent, state string }

func (c *mapCarrier) Get(k string) string {
	switch k {
	case "traceparent":
		return c.parent
	case "tracestate":
		return c.state
	}
	return ""
}

func (c *mapCarrier) Set(k, v string) {
	switch k {
	case "traceparent":
		c.parent = v
	case "tracestate":
		c.state = v
	}
}

func (c *mapCarrier) Keys() []string { return []string{"traceparent", "tracestate"} }

// Kinds of span, as OpenTelemetry names them.
const (
	Server   = trace.SpanKindServer
	Client   = trace.SpanKindClient
	Producer = trace.SpanKindProducer
	Consumer = trace.SpanKindConsumer
	Internal = trace.SpanKindInternal
)

// Start starts a span named name under the trace context (parent, state)
// — a new trace when parent is "" — and returns it with its own context as
// traceparent and tracestate, to keep with the message or send on.
func (t *Tracer) Start(name string, kind trace.SpanKind, parent, state string, msgID, topic string) (Span, string, string) {
	ctx := context.Background()
	if parent != "" {
		ctx = t.prop.Extract(ctx, &mapCarrier{parent: parent, state: state})
	}
	ctx, s := t.tracer.Start(ctx, name, trace.WithSpanKind(kind), trace.WithTimestamp(time.Now()),
		trace.WithAttributes(attribute.String("messaging.system", "sorakaq"),
			attribute.String("messaging.message.id", msgID),
			attribute.String("messaging.destination.name", topic)))
	out := &mapCarrier{}
	t.prop.Inject(ctx, out)
	return Span{s}, out.parent, out.state
}
