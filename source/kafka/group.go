package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/source"
)

// DefaultSessionTimeout is a consumer group member's session timeout
// unless WithGroupOptions sets another: how long the group waits for a
// member that stopped heartbeating (a SIGKILLed process) before it hands
// the member's partitions to the others. Kafka's own default is 45s.
const DefaultSessionTimeout = 10 * time.Second

// DefaultRevokeTimeout bounds how long a revocation waits for the engine
// to finish the batches in flight on the revoked partitions.
const DefaultRevokeTimeout = 30 * time.Second

// mirrorInterval is how often a group member commits the checkpoints it
// mirrors as the group's offsets.
const mirrorInterval = time.Second

// WithConsumerGroup makes the Source a member of the Kafka consumer group
// named group, for a mapping that several idem processes run: the group's
// protocol divides the topic's partitions among them (source.Assigner),
// and a partition moves only after its owner finished and committed its
// batch in flight. Each partition's idem checkpoint is also committed as
// the group's offset, about every second and when the partition is
// revoked, so that kafka-consumer-groups and lag exporters show idem's
// progress; idem never reads those offsets back: its store holds the
// checkpoints that count.
//
// The group fences nothing: a process that stalls past its session can
// still commit to idem's store after the group moved its partitions, so
// processes sharing a mapping must use shard leases too
// (engine.WithShardLeases); the group then only balances the partitions
// and hands them over without waiting for leases to run out.
//
// The member is a second client, made from WithBrokers and
// WithClientOptions (WithClient excludes a group), with fetching paused:
// it never reads records. Default: no group; every partition is read.
func WithConsumerGroup(group string) Option {
	return func(o *options) { o.group = group }
}

// WithGroupOptions adds options to the group member's client, such as
// kgo.SessionTimeout (default DefaultSessionTimeout) or kgo.Balancers
// (default: cooperative sticky).
func WithGroupOptions(opts ...kgo.GroupOpt) Option {
	return func(o *options) {
		for _, g := range opts {
			o.groupOpts = append(o.groupOpts, g)
		}
	}
}

// WithSessionTimeout sets the group member's session timeout: how long
// the group waits for a member that stopped heartbeating before it moves
// the member's partitions. It must lie within the brokers'
// group.min.session.timeout.ms and group.max.session.timeout.ms. Default:
// DefaultSessionTimeout.
func WithSessionTimeout(d time.Duration) Option {
	return func(o *options) {
		if d > 0 {
			o.groupOpts = append(o.groupOpts, kgo.SessionTimeout(d))
		}
	}
}

// WithRevokeTimeout sets how long a revocation waits for the engine to
// finish the revoked partitions' batches in flight; past it, the group
// hands them over anyway (leases still fence the late commit). It must be
// below the group's rebalance timeout (kgo's default, 60s). Default:
// DefaultRevokeTimeout.
func WithRevokeTimeout(d time.Duration) Option {
	return func(o *options) { o.revokeTimeout = d }
}

// WithLogger sets where the group member logs assignments and mirror
// commit failures. Default: slog.Default().
func WithLogger(l *slog.Logger) Option {
	return func(o *options) { o.log = l }
}

// member is the Source's consumer group membership.
type member struct {
	topic         string
	group         string
	cl            *kgo.Client
	log           *slog.Logger
	revokeTimeout time.Duration

	mu       sync.Mutex
	assigned map[int32]bool
	held     map[int32]bool
	changed  chan struct{} // closed and replaced at every assignment change
	released chan struct{} // closed and replaced at every Release
	closing  bool          // leave has begun: a revocation waits for nobody
	mirror   map[int32]int64
	done     map[int32]int64 // the last offsets committed

	ctx     context.Context // cancelled by leave
	cancel  context.CancelFunc
	stopped chan struct{} // closed when mirrorLoop returns
}

// joinGroup starts the member's client; the group assigns partitions in
// the background.
func (s *Source) joinGroup(o *options) error {
	m := &member{
		topic:         s.topic,
		group:         o.group,
		log:           o.log.With("topic", s.topic, "group", o.group),
		revokeTimeout: o.revokeTimeout,
		assigned:      make(map[int32]bool),
		held:          make(map[int32]bool),
		changed:       make(chan struct{}),
		released:      make(chan struct{}),
		mirror:        make(map[int32]int64),
		done:          make(map[int32]int64),
		stopped:       make(chan struct{}),
	}
	m.ctx, m.cancel = context.WithCancel(context.Background())
	opts := []kgo.Opt{kgo.SeedBrokers(o.brokers...)}
	opts = append(opts, o.clientOpts...)
	opts = append(opts,
		kgo.ConsumerGroup(o.group),
		kgo.ConsumeTopics(s.topic),
		kgo.DisableAutoCommit(),
		kgo.SessionTimeout(DefaultSessionTimeout),
		kgo.FetchMaxBytes(1<<20), // fetching is paused; a bound all the same
		kgo.OnPartitionsAssigned(m.onAssigned),
		kgo.OnPartitionsRevoked(m.onRevoked),
		kgo.OnPartitionsLost(m.onLost),
	)
	for _, g := range o.groupOpts {
		opts = append(opts, g)
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		m.cancel()
		return fmt.Errorf("kafka: creating the consumer group member: %w", err)
	}
	cl.PauseFetchTopics(s.topic)
	m.cl = cl
	s.member = m
	go m.mirrorLoop()
	return nil
}

// leave commits the mirrored offsets and leaves the group, after the
// engine released its partitions.
func (m *member) leave() {
	m.cancel()
	<-m.stopped
	// Close leaves the group, which revokes every partition: onRevoked
	// commits their mirrored offsets, without waiting for releases: the
	// Source is closing, so its reader is done.
	m.mu.Lock()
	m.closing = true
	m.mu.Unlock()
	m.cl.Close()
}

func (m *member) partitions(assigned map[string][]int32) []int32 {
	ps := slices.Clone(assigned[m.topic])
	slices.Sort(ps)
	return ps
}

// unassign takes partitions ps away and wakes their readers.
func (m *member) unassign(ps []int32) {
	m.mu.Lock()
	for _, p := range ps {
		delete(m.assigned, p)
	}
	m.signal()
	m.mu.Unlock()
}

// signal wakes everyone waiting for an assignment change; m.mu is held.
func (m *member) signal() {
	close(m.changed)
	m.changed = make(chan struct{})
}

func (m *member) onAssigned(_ context.Context, _ *kgo.Client, assigned map[string][]int32) {
	ps := m.partitions(assigned)
	if len(ps) == 0 {
		return
	}
	m.mu.Lock()
	for _, p := range ps {
		m.assigned[p] = true
	}
	m.signal()
	m.mu.Unlock()
	m.log.Info("consumer group assigned partitions", "partitions", ps)
}

// onRevoked takes partitions away and waits (up to the revoke timeout)
// until the engine released them, its last batches committed; then it
// commits their checkpoints as the group's offsets, so the next owner's
// tooling starts from them.
func (m *member) onRevoked(ctx context.Context, cl *kgo.Client, revoked map[string][]int32) {
	ps := m.partitions(revoked)
	if len(ps) == 0 {
		return
	}
	m.unassign(ps)
	m.log.Info("consumer group revoked partitions; handing them over once their batches in flight commit", "partitions", ps)

	deadline := time.NewTimer(m.revokeTimeout)
	defer deadline.Stop()
	for {
		m.mu.Lock()
		holding := !m.closing && slices.ContainsFunc(ps, func(p int32) bool { return m.held[p] })
		released := m.released
		m.mu.Unlock()
		if !holding {
			break
		}
		select {
		case <-released:
			continue
		case <-deadline.C:
			m.log.Warn("revoked partitions were not released in time; handing them over anyway (shard leases fence a late commit)", "timeout", m.revokeTimeout)
		case <-ctx.Done():
		}
		break
	}
	m.commit(ctx, cl, ps)
}

// onLost forgets partitions the group took away without a revocation (the
// session expired): another member may own them already, so there is
// nothing to wait for or commit.
func (m *member) onLost(_ context.Context, _ *kgo.Client, lost map[string][]int32) {
	ps := m.partitions(lost)
	if len(ps) == 0 {
		return
	}
	m.unassign(ps)
	m.log.Warn("consumer group lost partitions (the session expired?)", "partitions", ps)
}

// mirrorLoop commits mirrored checkpoints every mirrorInterval until leave.
func (m *member) mirrorLoop() {
	defer close(m.stopped)
	t := time.NewTicker(mirrorInterval)
	defer t.Stop()
	for {
		select {
		case <-m.ctx.Done():
			return
		case <-t.C:
		}
		m.mu.Lock()
		ps := slices.Collect(maps.Keys(m.assigned))
		m.mu.Unlock()
		m.commit(m.ctx, m.cl, ps)
	}
}

// commit commits the mirrored offsets of partitions ps that moved since
// the last commit.
func (m *member) commit(ctx context.Context, cl *kgo.Client, ps []int32) {
	offsets := make(map[int32]kgo.EpochOffset)
	m.mu.Lock()
	for _, p := range ps {
		if off, ok := m.mirror[p]; ok && off != m.done[p] {
			offsets[p] = kgo.EpochOffset{Epoch: -1, Offset: off}
		}
	}
	m.mu.Unlock()
	if len(offsets) == 0 {
		return
	}
	var commitErr error
	cl.CommitOffsetsSync(ctx, map[string]map[int32]kgo.EpochOffset{m.topic: offsets}, func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse, err error) {
		commitErr = commitError(resp, err)
	})
	if commitErr != nil {
		if ctx.Err() == nil && !errors.Is(commitErr, context.Canceled) {
			m.log.Warn("committing checkpoints as the group's offsets failed; the next commit retries", "err", commitErr)
		}
		return
	}
	m.mu.Lock()
	for p, eo := range offsets {
		m.done[p] = eo.Offset
	}
	m.mu.Unlock()
}

// commitError is the first error of an OffsetCommit.
func commitError(resp *kmsg.OffsetCommitResponse, err error) error {
	if err != nil {
		return err
	}
	for _, t := range resp.Topics {
		for _, p := range t.Partitions {
			if err := kerr.ErrorForCode(p.ErrorCode); err != nil {
				return fmt.Errorf("partition %d: %w", p.Partition, err)
			}
		}
	}
	return nil
}

// The source.Assigner and source.CheckpointMirror methods. Without a
// consumer group every partition is assigned, for good, and nothing is
// mirrored.

var (
	_ source.Assigner         = (*Source)(nil)
	_ source.CheckpointMirror = (*Source)(nil)
)

// Acquire reports whether the group assigns shard's partition to this
// process, and holds it until Release: a revocation of the partition waits
// for the Release. Without a group every partition is assigned.
func (s *Source) Acquire(shard string) (ok bool, changed <-chan struct{}) {
	if s.member == nil {
		return true, nil
	}
	return s.member.assignedTo(s.topic, shard, true)
}

// Assigned reports whether shard's partition is still assigned to this
// process.
func (s *Source) Assigned(shard string) (ok bool, changed <-chan struct{}) {
	if s.member == nil {
		return true, nil
	}
	return s.member.assignedTo(s.topic, shard, false)
}

// assignedTo reports whether shard's partition is assigned to this
// member, and holds it if hold; with the channel of the next change.
func (m *member) assignedTo(topic, shard string, hold bool) (bool, <-chan struct{}) {
	p, err := partitionOf(topic, shard)
	m.mu.Lock()
	defer m.mu.Unlock()
	ok := err == nil && m.assigned[p]
	if ok && hold {
		m.held[p] = true
	}
	return ok, m.changed
}

// Release ends the hold Acquire took on shard.
func (s *Source) Release(shard string) {
	m := s.member
	if m == nil {
		return
	}
	p, err := partitionOf(s.topic, shard)
	if err != nil {
		return
	}
	m.mu.Lock()
	if m.held[p] {
		delete(m.held, p)
		close(m.released)
		m.released = make(chan struct{})
	}
	m.mu.Unlock()
}

// MirrorCheckpoint notes shard's checkpoint, to commit as the group's
// offset for its partition: the offset of the next record to read. Without
// a group it does nothing.
func (s *Source) MirrorCheckpoint(shard string, after idem.Sequence) {
	m := s.member
	if m == nil {
		return
	}
	p, err1 := partitionOf(s.topic, shard)
	off, err2 := nextOffset(after)
	if err1 != nil || err2 != nil {
		return
	}
	m.mu.Lock()
	m.mirror[p] = off
	m.mu.Unlock()
}

// partitionOf parses "<topic>-<partition>" without asking the cluster.
func partitionOf(topic, shard string) (int32, error) {
	rest, ok := strings.CutPrefix(shard, topic+"-")
	if !ok {
		return 0, fmt.Errorf("kafka: shard %q is not a partition of topic %q: %w", shard, topic, source.ErrShardNotFound)
	}
	p, err := strconv.ParseInt(rest, 10, 32)
	if err != nil || p < 0 {
		return 0, fmt.Errorf("kafka: shard %q is not a partition of topic %q: %w", shard, topic, source.ErrShardNotFound)
	}
	return int32(p), nil
}
