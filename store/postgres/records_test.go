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

// TestRowClaimsDropped: schema version 8 drops the record claims' table
// and function, so that a process of an earlier version fails at its next
// claim instead of claiming where this one does not look.
func TestRowClaimsDropped(t *testing.T) {
	s, _ := openStore(t, WithPurgeInterval(0))
	ctx := context.Background()
	ident := pgx.Identifier{s.schema}.Sanitize()
	_, err := s.pool.Exec(ctx, "SELECT * FROM "+ident+".claim_records('{}', '\\x00', now(), now(), true, NULL, NULL)")
	if err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("claim_records: %v, want it gone", err)
	}
	if _, err := s.pool.Exec(ctx, "SELECT 1 FROM "+ident+".record_claims"); err == nil {
		t.Fatal("record_claims is still there")
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
