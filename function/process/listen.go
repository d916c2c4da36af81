package process

import (
	"context"
	"net"
	"sync"
)

// instanceListener is one process's Runtime API listener: a loopback port
// of its own, so that AWS_LAMBDA_RUNTIME_API is the bare host:port that
// Lambda's runtime clients expect, and so that a request's connection says
// which process made it. It accepts only connections from the process (see
// peerIsProcess), and the instance closes it, with the connections it
// accepted, when the process exits.
type instanceListener struct {
	net.Listener
	inst *instance

	mu     sync.Mutex
	conns  map[*instanceConn]struct{}
	closed bool
}

// instanceConn is a connection from a process to its listener.
type instanceConn struct {
	net.Conn
	ln   *instanceListener
	once sync.Once
}

type instanceKey struct{}

// Accept returns the next connection from the process; it closes others.
func (l *instanceListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ok, err := peerIsProcess(c, l.inst.cmd.Process.Pid)
		if !ok {
			attrs := []any{"pid", l.inst.cmd.Process.Pid, "process", l.inst.id, "from", c.RemoteAddr().String()}
			if err != nil {
				attrs = append(attrs, "err", err)
			}
			l.inst.f.log.Warn("refused a Runtime API connection that is not from the function's process", attrs...)
			_ = c.Close()
			continue
		}
		ic := &instanceConn{Conn: c, ln: l}
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			_ = c.Close()
			return nil, net.ErrClosed
		}
		l.conns[ic] = struct{}{}
		l.mu.Unlock()
		return ic, nil
	}
}

// closeAll closes the listener and every connection it accepted.
func (l *instanceListener) closeAll() {
	_ = l.Listener.Close()
	l.mu.Lock()
	l.closed = true
	conns := l.conns
	l.conns = nil
	l.mu.Unlock()
	for c := range conns {
		_ = c.Conn.Close()
	}
}

// Close closes the connection and forgets it.
func (c *instanceConn) Close() error {
	c.once.Do(func() {
		c.ln.mu.Lock()
		delete(c.ln.conns, c)
		c.ln.mu.Unlock()
	})
	return c.Conn.Close()
}

// connContext gives each request's context the instance whose listener
// accepted its connection (see instanceOf).
func connContext(ctx context.Context, c net.Conn) context.Context {
	if ic, ok := c.(*instanceConn); ok {
		return context.WithValue(ctx, instanceKey{}, ic.ln.inst)
	}
	return ctx
}

// instanceOf returns the process a request came from.
func instanceOf(ctx context.Context) *instance {
	inst, _ := ctx.Value(instanceKey{}).(*instance)
	return inst
}
