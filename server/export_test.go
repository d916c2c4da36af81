package server

import (
	"context"
	"time"
)

// WithLimits sets the limits on clients (a zero keeps one's default).
func WithLimits(bodyTimeout time.Duration, maxConns int, unverifiedBodyBytes int64) Option {
	return withLimits(bodyTimeout, maxConns, unverifiedBodyBytes)
}

// Ready is what GET /readyz answers.
func (s *Server) Ready(ctx context.Context) error { return s.ready(ctx) }

// CloseStorage closes the embedded storage under a server that keeps
// running, as a failed disk would leave it.
func (s *Server) CloseStorage() error { return s.db.Close() }
