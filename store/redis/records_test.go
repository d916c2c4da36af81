package redis_test

import (
	"context"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/store"
	redisstore "github.com/idem-run/idem/store/redis"
)

// TestLegacyProgress: the scope-wide progress string earlier versions
// wrote is read as Mapping "" (by Progress and ScopeProgress) beside the
// mappings' fields, until a commit of Mapping "" replaces it.
func TestLegacyProgress(t *testing.T) {
	f := newFixture(t)
	p := "{" + f.prefix + "}:"
	if err := f.admin.Set(f.ctx, p+"pg:2:sc2:in0", "41,43,44", 0).Err(); err != nil {
		t.Fatal(err)
	}
	legacy := store.ProgressKey{Scope: "sc", Stream: "in", Shard: "0"}
	got, err := f.s.Progress(f.ctx, legacy)
	if err != nil || got.HighWater != "41" || len(got.Above) != 2 || got.Filter != "" {
		t.Fatalf("legacy Progress = %+v, %v", got, err)
	}
	mk := legacy
	mk.Mapping = "orders"
	commit := func(k store.ProgressKey, pr store.Progress) {
		t.Helper()
		if err := f.s.Commit(f.ctx, &store.Write{Checkpoint: store.CheckpointKey{Mapping: k.Mapping, Stream: "in", Shard: "0"},
			HasProgress: true, ProgressKey: k, Progress: pr}); err != nil {
			t.Fatal(err)
		}
	}
	commit(mk, store.Progress{HighWater: "50", Filter: "f|,"})
	scope := func() map[string]store.Progress {
		t.Helper()
		all, err := f.s.ScopeProgress(f.ctx, legacy)
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]store.Progress{}
		for _, mp := range all {
			m[mp.Mapping] = mp.Progress
		}
		return m
	}
	if all := scope(); len(all) != 2 || all[""].HighWater != "41" || all["orders"].HighWater != "50" || all["orders"].Filter != "f|," {
		t.Fatalf("ScopeProgress = %+v", all)
	}
	commit(legacy, store.Progress{HighWater: "60"})
	if n, err := f.admin.Exists(f.ctx, p+"pg:2:sc2:in0").Result(); err != nil || n != 0 {
		t.Fatalf("legacy key after a commit of Mapping \"\": exists %d, %v; want deleted", n, err)
	}
	if got, err := f.s.Progress(f.ctx, legacy); err != nil || got.HighWater != "60" {
		t.Fatalf("Progress after the commit = %+v, %v", got, err)
	}
	if all := scope(); len(all) != 2 || all[""].HighWater != "60" || all["orders"].HighWater != "50" {
		t.Fatalf("ScopeProgress after the commit = %+v", all)
	}
}

// TestEvictionPolicy: New refuses a server whose maxmemory-policy may evict
// keys, naming the setting and the fix; it warns, and opens, when CONFIG is
// refused. Against a private redis-server, and against answers a hook makes
// up.
func TestEvictionPolicy(t *testing.T) {
	ctx := context.Background()
	wantRefused := func(t *testing.T, err error, policy string) {
		t.Helper()
		if err == nil || !strings.Contains(err.Error(), "maxmemory-policy") || !strings.Contains(err.Error(), "noeviction") ||
			!strings.Contains(err.Error(), policy) {
			t.Fatalf("New with maxmemory-policy %s: %v; want an error naming the setting and noeviction", policy, err)
		}
	}
	t.Run("server", func(t *testing.T) {
		a, _ := startRedis(t, t.TempDir(), "--maxmemory-policy", "allkeys-lru")
		s, err := redisstore.New(ctx, redisstore.WithAddr(a), redisstore.WithLogger(quiet))
		if err == nil {
			s.Close()
		}
		wantRefused(t, err, "allkeys-lru")
	})
	a := addr(t)
	for _, tc := range []struct {
		policy  string
		refused bool
	}{{"noeviction", false}, {"volatile-ttl", true}, {"allkeys-lfu", true}} {
		t.Run(tc.policy, func(t *testing.T) {
			client := goredis.NewClient(&goredis.Options{Addr: a, MaxRetries: -1, DialerRetries: 1})
			defer client.Close()
			client.AddHook(fakeConfig{vals: map[string]string{"appendonly": "yes", "appendfsync": "always", "maxmemory-policy": tc.policy}})
			log, buf := logged()
			s, err := redisstore.New(ctx, redisstore.WithClient(client), redisstore.WithPrefix(randomPrefix(t)), redisstore.WithLogger(log))
			if !tc.refused {
				if err != nil || strings.Contains(buf.String(), "level=WARN") {
					t.Fatalf("New = %v, log %q; want it open without a warning", err, buf.String())
				}
				s.Close()
				return
			}
			if err == nil {
				s.Close()
			}
			wantRefused(t, err, tc.policy)
			if err := client.Ping(ctx).Err(); err != nil {
				t.Fatalf("the caller's client after a refused New: %v", err)
			}
		})
	}
	t.Run("CONFIG refused", func(t *testing.T) {
		client := goredis.NewClient(&goredis.Options{Addr: a, MaxRetries: -1, DialerRetries: 1})
		defer client.Close()
		client.AddHook(fakeConfig{})
		log, buf := logged()
		s, err := redisstore.New(ctx, redisstore.WithClient(client), redisstore.WithPrefix(randomPrefix(t)), redisstore.WithLogger(log))
		if err != nil {
			t.Fatalf("New without CONFIG: %v, want it open with a warning", err)
		}
		s.Close()
		if !strings.Contains(buf.String(), "level=WARN") || !strings.Contains(buf.String(), "maxmemory-policy noeviction") {
			t.Fatalf("log %q; want a warning naming maxmemory-policy noeviction", buf.String())
		}
	})
}

// TestTime: the store's clock is the server's TIME (the test server runs on
// this host, so it is close to ours).
func TestTime(t *testing.T) {
	f := newFixture(t)
	before := time.Now()
	got, err := f.s.Time(f.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if d := got.Sub(before); d < -5*time.Second || d > 5*time.Second {
		t.Fatalf("Time = %v, %v from this host's", got, d)
	}
}

// TestRecordClaimLostNamesKey: a commit refused for w.MarkOwner's lost
// claim names the key and what holds it (another owner's claim, or a
// mark, expired or not); a checkpoint moving backwards is reported
// first, as the script checks it before the claims; without a MarkOwner,
// marks replace claims whoever holds them.
func TestRecordClaimLostNamesKey(t *testing.T) {
	f := newFixture(t)
	now := time.Now()
	a, b := markKey("owner a"), markKey("owner b")
	k, free := markKey("record k"), markKey("record free")
	claim := func(owner store.MarkKey, at time.Time, until time.Time) {
		t.Helper()
		c := &store.RecordClaims{Owner: owner, Keys: []store.MarkKey{k}, Now: at, LeaseUntil: until}
		if err := f.s.ClaimRecords(f.ctx, c); err != nil || c.Status[0] != store.Acquired {
			t.Fatalf("ClaimRecords(%q) = %v, %v", owner[:7], c.Status, err)
		}
	}
	claim(a, now, now.Add(time.Second))
	claim(b, now.Add(time.Second), now.Add(time.Hour))
	cp := store.CheckpointKey{Mapping: "m", Stream: "s", Shard: "0"}
	write := func(seq idem.Sequence, owner store.MarkKey) *store.Write {
		return &store.Write{Checkpoint: cp, NewCheckpoint: store.Checkpoint{Sequence: seq}, MarkOwner: owner,
			Marks: []store.Mark{{Key: free, Expires: now.Add(time.Hour)}, {Key: k, Expires: now.Add(time.Hour)}}}
	}
	wantLost := func(what string, err error, holder string) {
		t.Helper()
		if !errors.Is(err, store.ErrRecordClaimLost) || !strings.Contains(err.Error(), hex.EncodeToString(k[:])) ||
			!strings.Contains(err.Error(), holder) {
			t.Fatalf("Commit %s: %v; want ErrRecordClaimLost naming %x and %q", what, err, k[:], holder)
		}
	}
	if err := f.s.Commit(f.ctx, &store.Write{Checkpoint: cp, NewCheckpoint: store.Checkpoint{Sequence: "5"}}); err != nil {
		t.Fatal(err)
	}
	if err := f.s.Commit(f.ctx, write("4", a)); !errors.Is(err, store.ErrCheckpointBackwards) {
		t.Fatalf("Commit backwards over a lost claim: %v; want ErrCheckpointBackwards first", err)
	}
	wantLost("over b's claim", f.s.Commit(f.ctx, write("6", a)), "claimed: "+hex.EncodeToString(b[:])+":")

	// b commits a mark that has already expired (its key stays one grace).
	if err := f.s.Commit(f.ctx, &store.Write{Checkpoint: store.CheckpointKey{Mapping: "m", Stream: "s", Shard: "1"},
		NewCheckpoint: store.Checkpoint{Sequence: "1"}, MarkOwner: b,
		Marks: []store.Mark{{Key: k, Expires: now.Add(-time.Minute)}}}); err != nil {
		t.Fatal(err)
	}
	wantLost("over b's expired mark", f.s.Commit(f.ctx, write("6", a)), "(marked)")
	if cp, _, err := f.s.Checkpoint(f.ctx, cp); err != nil || cp.Sequence != "5" {
		t.Fatalf("checkpoint after the refused commits = %q, %v; want 5", cp.Sequence, err)
	}
	if err := f.s.Commit(f.ctx, write("6", store.MarkKey{})); err != nil {
		t.Fatalf("Commit without a MarkOwner: %v", err)
	}
}
