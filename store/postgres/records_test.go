package postgres

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/idem-run/idem/store"
)

// TestProgressMigratedPerMapping: a progress row written before progress
// was kept per mapping (schema version 2) is read after the migration as
// the scope-wide progress, Mapping "", with no filter, and mappings'
// progress then lives beside it.
func TestProgressMigratedPerMapping(t *testing.T) {
	h := newHarness(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, h.dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	ident := pgx.Identifier{h.schema}.Sanitize()
	setup := "CREATE SCHEMA " + ident + "; CREATE TABLE " + ident + ".schema_migrations (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
	if _, err := conn.Exec(ctx, setup); err != nil {
		t.Fatal(err)
	}
	for v := 1; v <= 2; v++ {
		if _, err := conn.Exec(ctx, strings.ReplaceAll(migrations[v-1], "{s}", ident)); err != nil {
			t.Fatalf("migration %d: %v", v, err)
		}
		if _, err := conn.Exec(ctx, "INSERT INTO "+ident+".schema_migrations (version) VALUES ($1)", v); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := conn.Exec(ctx, "INSERT INTO "+ident+".progress (scope, stream, shard, high_water, above) VALUES ('sc', 'in', '0', '41', '{43,44}')"); err != nil {
		t.Fatal(err)
	}

	s, err := New(ctx, h.dsn, WithSchema(h.schema))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	legacy := store.ProgressKey{Scope: "sc", Stream: "in", Shard: "0"}
	p, err := s.Progress(ctx, legacy)
	if err != nil || p.HighWater != "41" || len(p.Above) != 2 || p.Above[1] != "44" || p.Filter != "" {
		t.Fatalf("migrated Progress = %+v, %v", p, err)
	}
	mk := legacy
	mk.Mapping = "orders"
	if err := s.Commit(ctx, &store.Write{Checkpoint: store.CheckpointKey{Mapping: "orders", Stream: "in", Shard: "0"},
		HasProgress: true, ProgressKey: mk, Progress: store.Progress{HighWater: "50", Filter: "f"}}); err != nil {
		t.Fatal(err)
	}
	all, err := s.ScopeProgress(ctx, legacy)
	if err != nil || len(all) != 2 {
		t.Fatalf("ScopeProgress = %+v, %v; want the migrated row and the mapping's", all, err)
	}
	for _, mp := range all {
		switch mp.Mapping {
		case "":
			if mp.HighWater != "41" {
				t.Fatalf("migrated row = %+v", mp)
			}
		case "orders":
			if mp.HighWater != "50" || mp.Filter != "f" {
				t.Fatalf("mapping row = %+v", mp)
			}
		default:
			t.Fatalf("ScopeProgress lists %+v", mp)
		}
	}
}

// TestPurgeRecordClaims: Purge deletes the record claim rows an earlier
// version left (this one holds record claims as locks) once their lease
// ended over an hour ago, and keeps the others; the rows decide nothing.
func TestPurgeRecordClaims(t *testing.T) {
	s, _ := openStore(t, WithPurgeInterval(0))
	ctx := context.Background()
	now := time.Now().Truncate(time.Millisecond)
	old, recent := store.MarkKeyOf("sc", "old"), store.MarkKeyOf("sc", "recent")
	owner, other := store.MarkKeyOf("o", "a"), store.MarkKeyOf("o", "b")
	ident := pgx.Identifier{s.schema}.Sanitize()
	if _, err := s.pool.Exec(ctx, "INSERT INTO "+ident+".record_claims (key, owner, lease_until) VALUES ($1, $3, $4), ($2, $3, $5)",
		old[:], recent[:], owner[:], now.Add(-2*time.Hour), now.Add(-30*time.Minute)); err != nil {
		t.Fatal(err)
	}
	_, claims, err := s.Purge(ctx, now)
	if err != nil || claims != 1 {
		t.Fatalf("Purge = %d claims, %v; want 1", claims, err)
	}
	var n int
	if err := s.pool.QueryRow(ctx, "SELECT count(*) FROM "+ident+".record_claims WHERE key = $1", recent[:]).Scan(&n); err != nil || n != 1 {
		t.Fatalf("recent record claim rows = %d, %v; want 1", n, err)
	}
	// The rows hold nothing: another owner claims both keys.
	c := store.RecordClaims{Owner: other, Keys: []store.MarkKey{old, recent}, Now: now, LeaseUntil: now.Add(time.Minute)}
	if err := s.ClaimRecords(ctx, &c); err != nil || c.Held() != 2 {
		t.Fatalf("ClaimRecords after the purge = %v, %v", c.Status, err)
	}
}

// TestTime: the store's clock is the server's (the test server runs on this
// host, so it is close to ours).
func TestTime(t *testing.T) {
	s, _ := openStore(t)
	ctx := context.Background()
	before := time.Now()
	got, err := s.Time(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if d := got.Sub(before); d < -5*time.Second || d > 5*time.Second {
		t.Fatalf("Time = %v, %v from this host's", got, d)
	}
}
