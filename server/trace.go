package server

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/idem-run/idem/internal/buildinfo"
)

// tracerProviderSDK is the SDK's provider, which the Server owns: Close
// shuts it down.
type tracerProviderSDK = sdktrace.TracerProvider

// newTracerProvider configures OpenTelemetry tracing from the standard
// OTEL_* environment variables, so that idem's traces go wherever the
// rest of a deployment's go without a setting of idem's own. It returns
// nil, and tracing stays off (the engine's hot path then costs nothing
// more), unless an OTLP endpoint is set (OTEL_EXPORTER_OTLP_ENDPOINT or
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) or OTEL_TRACES_EXPORTER is otlp;
// OTEL_SDK_DISABLED=true or OTEL_TRACES_EXPORTER=none turn it off.
//
// Spans go over OTLP/HTTP with protobuf (the exporter reads the
// endpoint, headers, timeout, compression and TLS variables), batched
// (OTEL_BSP_*), sampled as OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG
// say (default: parentbased_always_on), from a resource named by
// OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES (default service.name:
// idem).
func newTracerProvider(ctx context.Context) (*sdktrace.TracerProvider, error) {
	if strings.EqualFold(os.Getenv("OTEL_SDK_DISABLED"), "true") {
		return nil, nil
	}
	switch exp := strings.TrimSpace(os.Getenv("OTEL_TRACES_EXPORTER")); exp {
	case "none":
		return nil, nil
	case "":
		if os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") == "" && os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") == "" {
			return nil, nil
		}
	case "otlp":
	default:
		return nil, fmt.Errorf("OTEL_TRACES_EXPORTER=%s: idem exports traces with otlp only", exp)
	}
	proto := os.Getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
	if proto == "" {
		proto = os.Getenv("OTEL_EXPORTER_OTLP_PROTOCOL")
	}
	if proto != "" && proto != "http/protobuf" {
		return nil, fmt.Errorf("OTEL_EXPORTER_OTLP_PROTOCOL=%s: idem exports traces with http/protobuf only", proto)
	}
	exp, err := otlptracehttp.New(ctx)
	if err != nil {
		return nil, fmt.Errorf("OTLP trace exporter: %w", err)
	}
	bi := buildinfo.Read()
	// Later detectors win: the environment's service name over idem's.
	res, err := resource.New(ctx,
		resource.WithAttributes(attribute.String("service.name", "idem"), attribute.String("service.version", bi.Version)),
		resource.WithTelemetrySDK(),
		resource.WithFromEnv(),
	)
	if err != nil && !errors.Is(err, resource.ErrPartialResource) {
		_ = exp.Shutdown(ctx)
		return nil, fmt.Errorf("OpenTelemetry resource: %w", err)
	}
	return sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res)), nil
}

// tracerShutdownTimeout bounds how long Close waits for the last spans to
// be exported: an unreachable collector must not hold up a shutdown.
const tracerShutdownTimeout = 5 * time.Second

// shutdownTracing exports the spans still buffered and stops the
// exporter's goroutine; nothing when tracing is off.
func (s *Server) shutdownTracing() {
	if s.tracer == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), tracerShutdownTimeout)
	defer cancel()
	if err := s.tracer.Shutdown(ctx); err != nil {
		s.log.Warn("exporting the last trace spans", "err", err)
	}
}

// tracerProvider is the provider the engine and the Invoke API's queues
// trace with: otel's no-op one when tracing is off, with which they skip
// tracing altogether.
func (s *Server) tracerProvider() trace.TracerProvider {
	if s.tracer == nil {
		return noop.NewTracerProvider()
	}
	return s.tracer
}
