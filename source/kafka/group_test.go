package kafka_test

import (
	"testing"
	"time"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/source/kafka"
)

// TestConsumerGroupHandOver: two Sources in one consumer group divide a
// topic's partitions; a partition revoked from a member moves only once
// the member released it, and its mirrored checkpoint is then the group's
// committed offset.
func TestConsumerGroupHandOver(t *testing.T) {
	ctx := testCtx(t)
	c := newCluster(t)
	topic := c.topic(ctx, t, 2, nil)
	shards := []string{kafka.ShardID(topic, 0), kafka.ShardID(topic, 1)}
	group := topic + "-group"
	opts := []kafka.Option{kafka.WithConsumerGroup(group), kafka.WithSessionTimeout(6 * time.Second), kafka.WithRevokeTimeout(20 * time.Second)}

	a := c.source(ctx, t, topic, opts...)
	eventually(t, "A to be assigned both partitions", func() bool {
		for _, sh := range shards {
			if ok, _ := a.Assigned(sh); !ok {
				return false
			}
		}
		return true
	})
	for _, sh := range shards {
		if ok, _ := a.Acquire(sh); !ok {
			t.Fatalf("A cannot acquire %s", sh)
		}
	}
	a.MirrorCheckpoint(shards[0], idem.SequenceOf(7)) // offsets 0..6 done: next is 7
	a.MirrorCheckpoint(shards[1], idem.SequenceOf(3))

	// B joins: the group takes a partition from A, but A holds both.
	b := c.source(ctx, t, topic, opts...)
	var moving string
	eventually(t, "the group to revoke a partition from A", func() bool {
		for _, sh := range shards {
			if ok, _ := a.Assigned(sh); !ok {
				moving = sh
				return true
			}
		}
		return false
	})
	for range 20 {
		if ok, _ := b.Acquire(moving); ok {
			t.Fatalf("B acquired %s while A still held it", moving)
		}
		time.Sleep(10 * time.Millisecond)
	}
	a.Release(moving)
	eventually(t, "B to acquire "+moving, func() bool { ok, _ := b.Acquire(moving); return ok })

	committed, err := c.adm.FetchOffsets(ctx, group)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int64{shards[0]: 7, shards[1]: 3}[moving]
	p := int32(0)
	if moving == shards[1] {
		p = 1
	}
	if o, ok := committed.Lookup(topic, p); !ok || o.At != want {
		t.Errorf("group offset of %s: %+v (found %v), want %d, committed on revocation", moving, o, ok, want)
	}
}

// eventually polls cond for up to 30 seconds.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
