package config

import (
	"fmt"
	"time"
)

// Lease is the top-level `lease` key: with it, several `idem serve`
// processes sharing one PostgreSQL or Redis store run the same mappings,
// each shard processed by the one process that holds its lease. A process
// renews its leases every ttl/3; a crashed one's shards are taken over
// once its leases run out, and a process that lost a lease can never
// commit for the shard again (its writes are fenced by the lease's token).
// The embedded store refuses it: one process owns its data dir.
type Lease struct {
	// TTL is how long a lease lasts without renewal, 1s to 10m: how long a
	// crashed process's shards wait before another process takes them over.
	// Default: 10s
	TTL Duration `yaml:"ttl"`
}

const (
	defaultLeaseTTL = Duration(10 * time.Second)
	minLeaseTTL     = Duration(time.Second)
	maxLeaseTTL     = Duration(10 * time.Minute)
)

func (f *File) applyLeaseDefaults(set func(path string) bool) {
	if l := f.Lease; l != nil && !set("lease.ttl") && l.TTL == 0 {
		l.TTL = defaultLeaseTTL
	}
}

func (c *checker) lease(f *File) {
	l := f.Lease
	if l == nil {
		return
	}
	if f.Store.Postgres == nil && f.Store.Redis == nil && f.Store.DynamoDB == nil {
		c.add("lease", fmt.Errorf("needs a shared store (store.postgres, store.redis or store.dynamodb): the embedded store belongs to the one process that owns %s", f.DataDir))
	}
	c.durRange("lease.ttl", l.TTL, minLeaseTTL, maxLeaseTTL)
}

// kafkaGroups checks the mappings' Kafka consumer groups. A group moves
// partitions between processes, so they must share the store that holds the
// checkpoints: with the embedded store each process has its own data
// directory, and a partition that moves finds no checkpoint there (it would
// start again from startingPosition, skipping or replaying records). A group
// balances partitions but fences nothing, so processes sharing a store need
// leases. And two mappings in one group would take each other's partitions.
func (c *checker) kafkaGroups(f *File) {
	seen := make(map[string]int)
	for i := range f.Mappings {
		k := f.Mappings[i].Source.Kafka
		if k == nil || k.Group == "" {
			continue
		}
		p := fmt.Sprintf("mappings[%d].source.kafka.group", i)
		if j, dup := seen[k.Group]; dup {
			c.addf(p, "%q is mappings[%d]'s group too: give each mapping a group of its own", k.Group, j)
			continue
		}
		seen[k.Group] = i
		if f.Store.Postgres == nil && f.Store.Redis == nil && f.Store.DynamoDB == nil {
			c.addf(p, "a consumer group needs a shared store (store.postgres, store.redis or store.dynamodb, with lease): the group moves partitions between processes, and with the embedded store each process keeps its checkpoints in its own %s, so a partition that moves would restart from startingPosition", f.DataDir)
			continue
		}
		if f.Lease == nil {
			c.addf(p, "needs lease with a shared store: the group balances partitions, but only leases stop a process that stalled past its session from committing")
		}
	}
}
