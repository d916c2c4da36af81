package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"sync"
	"time"
)

// pprofServer serves net/http/pprof on debug.pprof, a loopback address
// apart from the API (config refuses any other host).
type pprofServer struct {
	http *http.Server
	ln   net.Listener
	done chan struct{} // closed when Serve has returned
	stop sync.Once
}

// startPprof listens on debug.pprof, when set, and serves the profiles
// until stopPprof.
func (s *Server) startPprof() error {
	if s.cfg.Debug == nil || s.cfg.Debug.Pprof == "" {
		return nil
	}
	ln, err := net.Listen("tcp", s.cfg.Debug.Pprof)
	if err != nil {
		return fmt.Errorf("debug.pprof: listen %s: %w", s.cfg.Debug.Pprof, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	p := &pprofServer{ln: ln, done: make(chan struct{}),
		http: &http.Server{Handler: mux, ReadHeaderTimeout: readHeaderTimeout, IdleTimeout: idleTimeout,
			MaxHeaderBytes: maxHeaderBytes, ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelDebug)}}
	s.pprof = p
	s.log.Info("serving pprof", "listen", ln.Addr().String())
	go func() {
		defer close(p.done)
		if err := p.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Warn("pprof listener failed", "err", err)
		}
	}()
	return nil
}

// PprofAddr returns the address pprof listens on, once Run has started
// it, or "".
func (s *Server) PprofAddr() string {
	if s.pprof == nil {
		return ""
	}
	return s.pprof.ln.Addr().String()
}

// stopPprof shuts the pprof listener down, closing what is still open
// after a short grace (a 30s CPU profile need not hold up shutdown), and
// waits for it. It is safe to call more than once.
func (s *Server) stopPprof() {
	p := s.pprof
	if p == nil {
		return
	}
	p.stop.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if err := p.http.Shutdown(ctx); err != nil {
			p.http.Close()
		}
		<-p.done
	})
}
