package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/idem-run/idem"
)

// Limits on what one client may hold of idem's resources. A request's body
// must arrive within bodyTimeout of its headers, and its answer be taken
// within writeTimeout (more for the Invoke API, whose answers wait for the
// function); an idle keep-alive connection is closed after idleTimeout;
// and idem accepts at most a number of connections that keeps file
// descriptors free for its storage and functions (see connLimit).
//
// http.Server.ReadTimeout and WriteTimeout are not used: they would bound a
// whole request, and an invocation may run for its function's timeout
// (up to 15 minutes). The deadlines are set per request instead, with
// http.ResponseController.
const (
	defaultBodyTimeout  = time.Minute
	defaultWriteTimeout = 2 * time.Minute
	idleTimeout         = 2 * time.Minute
	readHeaderTimeout   = 10 * time.Second
	maxHeaderBytes      = 64 << 10
	// fdHeadroom is the file descriptors kept for the storage, the
	// sources, the functions' processes and the logs.
	fdHeadroom            = 512
	minConns, maxConnsCap = 32, 16384
)

// withLimits sets the limits on clients, for tests: a zero leaves one as it
// is.
func withLimits(bodyTimeout time.Duration, maxConns int, unverifiedBodyBytes int64) Option {
	return optionFunc(func(s *Server) {
		if bodyTimeout > 0 {
			s.bodyTimeout = bodyTimeout
		}
		if maxConns > 0 {
			s.maxConns = maxConns
		}
		if unverifiedBodyBytes > 0 {
			s.unverifiedBodyBytes = unverifiedBodyBytes
		}
	})
}

// connLimit is how many connections the API accepts at once: the file
// descriptors this process may open (Go raises the soft limit to the hard
// one at start) less fdHeadroom, within [minConns, maxConnsCap].
func connLimit() int {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 1024
	}
	n := int64(rl.Cur) - fdHeadroom
	return int(min(max(n, minConns), maxConnsCap))
}

// invokeWriteTimeout is the write deadline of the Invoke API: its answer
// may wait for the longest function's timeout, twice (a repeat waits for a
// running invocation of its key, which may be taken over and run again),
// plus a margin.
func (s *Server) invokeWriteTimeout() time.Duration {
	var longest time.Duration
	for _, f := range s.cfg.Functions {
		longest = max(longest, f.Timeout.D())
	}
	return 2*longest + defaultWriteTimeout
}

// deadlines sets each request's read deadline for its body and its write
// deadline for its answer.
func (s *Server) deadlines(h http.Handler) http.Handler {
	invokeWrite := s.invokeWriteTimeout()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		write := defaultWriteTimeout
		if strings.HasPrefix(r.URL.Path, "/2015-03-31/functions/") {
			write = invokeWrite
		}
		_ = rc.SetWriteDeadline(time.Now().Add(write))
		// The handlers below replace the body; net/http must keep seeing
		// its own, to know whether what is left of it may be skipped.
		r2 := new(http.Request)
		*r2 = *r
		if r.ContentLength != 0 && r.Body != nil && r.Body != http.NoBody {
			_ = rc.SetReadDeadline(time.Now().Add(s.bodyTimeout))
			// Once the body is read, the connection's reads are net/http's
			// watch for the client going away, which a deadline would turn
			// into a cancelled request.
			r2.Body = &deadlineBody{ReadCloser: r.Body, clear: func() { _ = rc.SetReadDeadline(time.Time{}) }}
		}
		h.ServeHTTP(w, r2)
	})
}

// deadlineBody clears the read deadline once the body is read to its end.
type deadlineBody struct {
	io.ReadCloser
	clear func()
	once  sync.Once
}

func (b *deadlineBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF {
		b.once.Do(b.clear)
	}
	return n, err
}

// limitListener accepts at most cap(sem) connections at once; Accept waits
// for one to close beyond that, leaving the others in the kernel's
// backlog.
type limitListener struct {
	net.Listener
	sem  chan struct{}
	done chan struct{}
	once sync.Once
}

func newLimitListener(l net.Listener, n int) *limitListener {
	return &limitListener{Listener: l, sem: make(chan struct{}, n), done: make(chan struct{})}
}

func (l *limitListener) Accept() (net.Conn, error) {
	select {
	case l.sem <- struct{}{}:
	case <-l.done:
		return nil, net.ErrClosed
	}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.sem
		return nil, err
	}
	return &limitConn{Conn: c, release: func() { <-l.sem }}, nil
}

func (l *limitListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return l.Listener.Close()
}

// limitConn gives its place back to its limitListener once closed.
type limitConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

// Readiness phases of a Server.
const (
	phaseStarting int32 = iota
	phaseServing
	phaseStopping
)

// readyProbe is the key the readiness check reads from a shared store: a
// read that reaches it, whose absence is the expected answer.
const readyProbe = "\x00readyz"

// checkReady is the default readiness: the server is serving (not starting
// or shutting down), its embedded storage can take writes (it has not
// failed, and its disk is not full: pebbledb's Health), a shared store
// answers reads, and no mapping's shard is stopped on an error.
func (s *Server) checkReady(ctx context.Context) error {
	switch s.phase.Load() {
	case phaseStarting:
		return errors.New("starting")
	case phaseStopping:
		return errors.New("shutting down")
	}
	if err := s.db.Health(); err != nil {
		return fmt.Errorf("the embedded storage in %s: %w", s.cfg.DataDir, err)
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if s.cfg.Store.Postgres != nil || s.cfg.Store.Redis != nil || s.cfg.Store.DynamoDB != nil {
		if _, err := s.store.State(ctx, readyProbe, readyProbe); err != nil && !errors.Is(err, idem.ErrNotFound) {
			return fmt.Errorf("the store: %w", err)
		}
	}
	var errs []error
	for _, st := range s.engine.Status() {
		if st.State == "error" || st.State == "stopped" && st.LastError != "" {
			errs = append(errs, fmt.Errorf("mapping %q shard %s is %s: %s", st.Mapping, st.Shard, st.State, st.LastError))
		}
	}
	return errors.Join(errs...)
}

// handleReady is GET /readyz: 200 "ok" when the server can do its work,
// else 503 with the reason as {"error": …}.
func (s *Server) handleReady(w http.ResponseWriter, r *http.Request) {
	if err := s.ready(r.Context()); err != nil {
		writeError(w, http.StatusServiceUnavailable, fmt.Errorf("not ready: %w", err))
		return
	}
	w.Write([]byte("ok\n"))
}
