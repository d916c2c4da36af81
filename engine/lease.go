package engine

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/idem-run/idem/store"
)

// leaseConfig is WithShardLeases' setting.
type leaseConfig struct {
	owner string
	ttl   time.Duration
}

// WithShardLeases makes several engines (idem processes) that share one
// store safe to run the same mappings: each mapping's shard is processed by
// the engine that holds its lease, a claims record (store.Claims) taken for
// ttl and extended every ttl/3 while it processes. The others wait
// (status "leased elsewhere") and take the shard over once the lease is
// released (on a clean stop) or runs out (a crash). Every write the shard
// commits is fenced by the lease's token (store.Write.Fence): an engine
// that lost the lease, stalled past its ttl say, can never commit after
// the new owner took it; when a renewal or a commit finds the lease lost,
// the shard's work is cancelled and the engine goes back to waiting for
// the lease. owner names this engine in logs.
//
// The store must implement store.Claims (Add and Run refuse otherwise).
// Default: off, for a store one engine owns.
func WithShardLeases(owner string, ttl time.Duration) Option {
	return optionFunc(func(e *Engine) {
		e.lease = &leaseConfig{owner: owner, ttl: ttl}
	})
}

// DefaultLeaseOwner names this process for WithShardLeases: hostname:pid.
func DefaultLeaseOwner() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "unknown-host"
	}
	return host + ":" + strconv.Itoa(os.Getpid())
}

// checkLeases refuses shard leases over a store without claims, for Add
// and Run.
func (e *Engine) checkLeases() error {
	if e.lease == nil {
		return nil
	}
	if e.lease.ttl <= 0 {
		return fmt.Errorf("engine: shard leases: ttl %s must be positive", e.lease.ttl)
	}
	if _, ok := e.store.(store.Claims); !ok {
		return fmt.Errorf("engine: shard leases need a store that keeps claims (store.Claims); %T does not", e.store)
	}
	return nil
}

// leasePayload is the payload hash of every shard lease: any engine may
// take over any other's.
var leasePayload = store.PayloadHash(sha256.Sum256([]byte("idem shard lease")))

// leaseScope is the scope of shard leases' claims keys.
const leaseScope = "\x00lease"

// leaseName names a mapping's lease on a shard in leaseScope.
func leaseName(mapping, stream, shard string) string {
	return mapping + "\x00" + stream + "\x00" + shard
}

// leaseKey is the claims key of a mapping's lease on a shard.
func leaseKey(mapping, stream, shard string) store.MarkKey {
	return store.MarkKeyOf(leaseScope, leaseName(mapping, stream, shard))
}

// runLeased processes the shard while it holds the shard's lease, until
// ctx is done: acquiring it (waiting while another engine holds it),
// processing under it with a renewer running, and going back to acquiring
// when the lease is lost. On a clean stop it releases the lease, so that
// another engine takes the shard over at once.
func (s *shard) runLeased(ctx, work context.Context) {
	cfg := s.e.lease
	claims := s.e.store.(store.Claims)
	log := s.e.log.With("mapping", s.m.cfg.Name, "shard", s.id, "owner", cfg.owner)
	key := leaseKey(s.m.cfg.Name, s.m.cfg.Stream, s.id)
	for ctx.Err() == nil {
		l, ok := s.acquire(ctx, claims, key)
		if !ok {
			break
		}
		log.Info("shard lease acquired", "token", l.Token, "ttl", cfg.ttl)
		lost := s.underLease(ctx, work, claims, l, log)
		if !lost {
			// A clean stop (or a finished shard): hand the shard over now.
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), max(cfg.ttl/3, time.Second))
			if err := claims.Release(rctx, l); err != nil {
				log.Warn("releasing the shard lease failed; another engine takes the shard once it runs out", "err", err)
			}
			cancel()
			break
		}
		s.state.Store("lease lost")
		log.Warn("shard lease lost: stopped processing the shard; waiting to acquire it again")
	}
	if s.finished.Load() {
		s.state.Store("finished")
		return
	}
	s.state.Store("stopped")
}

// acquire takes the lease key, retrying every ttl/3 while another engine
// holds it; ok is false once ctx is done.
func (s *shard) acquire(ctx context.Context, claims store.Claims, key store.MarkKey) (store.Claim, bool) {
	cfg := s.e.lease
	failures := 0
	for {
		// A lease an earlier version still holds under its legacy key
		// (store.Legacy) holds the shard until it runs out.
		l, err := s.e.legacy.Claim(ctx, claims, key, leaseScope, leaseName(s.m.cfg.Name, s.m.cfg.Stream, s.id), leasePayload, cfg.ttl, s.e.now())
		switch {
		case err == nil && l.Status == store.Acquired:
			return l, true
		case err == nil:
			err = fmt.Errorf("lease record is %s", l.Status)
			fallthrough
		case !errors.Is(err, store.ErrClaimHeld):
			if ctx.Err() != nil {
				return store.Claim{}, false
			}
			failures++
			s.state.Store("error")
			s.lastError.Store(err.Error())
			s.e.log.Error("acquiring the shard lease failed; retrying", "mapping", s.m.cfg.Name, "shard", s.id, "err", err)
			if sleep(ctx, s.backoff(failures)) != nil {
				return store.Claim{}, false
			}
			continue
		}
		failures = 0
		s.state.Store("leased elsewhere")
		if sleep(ctx, cfg.ttl/3) != nil {
			return store.Claim{}, false
		}
	}
}

// underLease processes the shard under lease l until ctx is done or the
// lease is lost (lost is then true). A renewer extends the lease every
// ttl/3; when it finds the lease taken over, or unrenewed past its end, it
// cancels the shard's reading and work. Writes are fenced by l's token, so
// a commit after the loss fails with store.ErrFenced, which stops the
// shard too. underLease returns once the renewer has ended.
func (s *shard) underLease(ctx, work context.Context, claims store.Claims, l store.Claim, log interface {
	Warn(string, ...any)
	Error(string, ...any)
}) (lost bool) {
	ttl := s.e.lease.ttl
	lctx, cancelRead := context.WithCancel(ctx)
	defer cancelRead()
	lwork, cancelWork := context.WithCancel(work)
	defer cancelWork()
	var mu sync.Mutex
	var leaseLost bool
	loseLease := func() {
		mu.Lock()
		leaseLost = true
		mu.Unlock()
		cancelRead()
		cancelWork()
	}

	s.fence.Store(&store.Fence{Key: l.Key, Token: l.Token})
	defer s.fence.Store(nil)

	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		until := l.LeaseUntil
		t := time.NewTicker(max(ttl/3, time.Millisecond))
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-lwork.Done():
				return
			case <-t.C:
			}
			next := s.e.now().Add(ttl)
			ectx, cancel := context.WithTimeout(lwork, max(ttl/3, time.Millisecond))
			err := claims.Extend(ectx, l, next)
			cancel()
			switch {
			case err == nil:
				until = next
			case errors.Is(err, store.ErrFenced):
				log.Error("shard lease taken over by another engine", "err", err)
				loseLease()
				return
			case lwork.Err() != nil:
				return
			case !s.e.now().Before(until):
				log.Error("shard lease ran out without a renewal; stopping the shard", "err", err)
				loseLease()
				return
			default:
				log.Warn("renewing the shard lease failed; retrying", "err", err)
			}
		}
	})

	fenced := s.process(lctx, lwork)
	close(stop)
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	return leaseLost || fenced
}

// fenceWrite makes w conditional on the shard's lease, if it holds one.
func (s *shard) fenceWrite(w *store.Write) {
	w.Fence = s.fence.Load()
}
