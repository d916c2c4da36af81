package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/config"
	"github.com/idem-run/idem/function"
	"github.com/idem-run/idem/function/gofunc"
	"github.com/idem-run/idem/invoke"
	"github.com/idem-run/idem/store"
)

// WithInvokeHandler registers h as the in-process Go function name's
// handler for direct invocations (the Invoke API). With a batch handler
// registered under the same name (WithHandler), mappings use that one and
// the Invoke API this one; alone, it serves mappings too, with Lambda's
// event JSON (a KinesisEvent), as a Lambda function would.
func WithInvokeHandler(name string, h idem.InvokeHandler) Option {
	return optionFunc(func(s *Server) {
		if s.invokeHandlers == nil {
			s.invokeHandlers = make(map[string]idem.InvokeHandler)
		}
		s.invokeHandlers[name] = h
	})
}

// goFunction builds the driver of an in-process Go function from its
// registered handlers.
func (s *Server) goFunction(name string) (function.Driver, error) {
	h, ih := s.handlers[name], s.invokeHandlers[name]
	region := gofunc.WithRegion(s.region())
	switch {
	case h != nil && ih != nil:
		return gofunc.New(h, gofunc.WithInvokeHandler(ih), region), nil
	case h != nil:
		return gofunc.New(h, region), nil
	case ih != nil:
		return gofunc.NewInvoke(ih, region), nil
	}
	return nil, fmt.Errorf("%q has no http or process kind and no Go handler is registered under that name (a program embedding idem registers it with server.WithHandler or server.WithInvokeHandler, and runs `serve` and `validate` with it)", name)
}

// setupInvoke makes the Invoke API's service over the function drivers:
// each function's event queue in the data directory, its claims in the
// store. It also warns when the API is reachable beyond this machine
// without tokens.
func (s *Server) setupInvoke(fns map[string]function.Driver) error {
	cfg := s.cfg
	s.auth = newAuthenticator(cfg.Auth, s.unverifiedBodyBytes, s.log)
	if !cfg.Auth.Enabled() && !config.LoopbackListen(cfg.Listen) {
		s.log.Warn("the HTTP API listens beyond loopback without auth.tokens: anyone who can reach "+cfg.Listen+" can invoke functions, put records, and read records, state and status; set auth.tokens, or listen on 127.0.0.1",
			"listen", cfg.Listen)
	}
	claims, ok := s.store.(store.Claims)
	if !ok {
		return errors.New("the store keeps no idempotency claims (store.Claims): the Invoke API needs them")
	}
	if s.auth != nil {
		s.auth.claims = claims
	}
	list := make([]invoke.Function, 0, len(cfg.Functions))
	for _, f := range cfg.Functions {
		a := f.Async
		fc := invoke.Function{
			Name: f.Name, Timeout: f.Timeout.D(),
			Async: invoke.Async{
				MaximumEventAge:     a.MaximumEventAge.D(),
				PermanentErrorTypes: a.PermanentErrorTypes,
				BaseDelay:           a.Retry.BaseDelay.D(),
				MaxDelay:            a.Retry.MaxDelay.D(),
			},
			IdempotencyKey:       f.Idempotency.Key,
			IdempotencyRetention: f.Idempotency.Retention.D(),
		}
		fc.Async.RetryAttempts(a.MaximumRetryAttempts)
		if a.OnFailure != nil {
			fc.Async.OnFailure = a.OnFailure.Stream
		}
		if f.Process != nil {
			// More would only wait for a busy process, on their timeout.
			fc.Async.Concurrency = f.Process.Concurrency
		}
		switch {
		case f.InProcess() && s.invokeHandlers[f.Name] == nil:
			fc.Unavailable = "it is an in-process Go batch handler (idem.Handler), which takes batches of records only; register an idem.InvokeHandler for it with server.WithInvokeHandler"
		default:
			if pi, ok := fns[f.Name].(function.PayloadInvoker); ok {
				fc.Driver = pi
			} else {
				fc.Unavailable = "its driver cannot take a raw payload"
			}
		}
		list = append(list, fc)
	}
	svc, err := invoke.New(s.db, claims, list, invoke.WithLogger(s.log), invoke.WithRegion(s.region()), invoke.WithTracerProvider(s.tracerProvider()))
	if err != nil {
		return err
	}
	s.invoke = svc
	return nil
}

// runInvoke runs the asynchronous invocations until ctx is done; the
// channel receives Run's error once the runs in flight have finished.
func (s *Server) runInvoke(ctx context.Context) <-chan error {
	done := make(chan error, 1)
	go func() { done <- s.invoke.Run(ctx) }()
	return done
}

// invokeRoutes registers the Invoke API (behind the tokens, as every route:
// see routes).
func (s *Server) invokeRoutes(mux *http.ServeMux) {
	mux.Handle(invoke.Route, s.invoke)
}

// guardPut keeps the Invoke API's event queues (idem:invoke:<function>) for
// the Invoke API alone.
func (s *Server) guardPut(h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if invoke.IsQueueStream(r.PathValue("stream")) {
			writeError(w, http.StatusForbidden, fmt.Errorf("stream %q is the event queue of the Invoke API: send events with POST /2015-03-31/functions/{name}/invocations and X-Amz-Invocation-Type: Event", r.PathValue("stream")))
			return
		}
		h(w, r)
	})
}
