package main

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// resetSchema drops schema with everything in it and creates it again,
// holding an empty effects table: the rows a run writes, one per record,
// whose PRIMARY KEY refuses a second row for an id.
func resetSchema(ctx context.Context, admin *pgxpool.Pool, schema string) error {
	if err := dropSchema(ctx, admin, schema); err != nil {
		return err
	}
	s := pgx.Identifier{schema}.Sanitize()
	if _, err := admin.Exec(ctx, "CREATE SCHEMA "+s+"; CREATE TABLE "+effectsTable(schema)+
		" (id text PRIMARY KEY, body bytea NOT NULL)"); err != nil {
		return fmt.Errorf("creating schema %s: %w", schema, err)
	}
	return nil
}

// dropSchema drops schema with everything in it, if it exists.
func dropSchema(ctx context.Context, admin *pgxpool.Pool, schema string) error {
	if _, err := admin.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE"); err != nil {
		return fmt.Errorf("dropping schema %s: %w", schema, err)
	}
	return nil
}

// effectsTable is the quoted name of schema's effects table.
func effectsTable(schema string) string {
	return pgx.Identifier{schema, "effects"}.Sanitize()
}

// checkRows verifies that schema's effects table holds exactly want rows,
// with want distinct ids.
func checkRows(ctx context.Context, admin *pgxpool.Pool, schema string, want int) error {
	var rows, ids int
	if err := admin.QueryRow(ctx, "SELECT count(*), count(DISTINCT id) FROM "+effectsTable(schema)).Scan(&rows, &ids); err != nil {
		return fmt.Errorf("counting rows: %w", err)
	}
	if rows != want || ids != want {
		return fmt.Errorf("%d rows with %d distinct ids, want %d of each", rows, ids, want)
	}
	return nil
}

// newPool opens a pool over dsn with at least maxConns connections.
func newPool(ctx context.Context, dsn string, maxConns int) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("parsing the PostgreSQL URL: %w", err)
	}
	if cfg.MaxConns < int32(maxConns) {
		cfg.MaxConns = int32(maxConns)
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("opening a PostgreSQL pool: %w", err)
	}
	return pool, nil
}

// warm opens n of pool's connections ahead of the clock, so that no
// system pays for connecting while timed.
func warm(ctx context.Context, pool *pgxpool.Pool, n int) error {
	conns := make([]*pgxpool.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Release()
		}
	}()
	for range n {
		c, err := pool.Acquire(ctx)
		if err != nil {
			return fmt.Errorf("opening a connection: %w", err)
		}
		conns = append(conns, c)
	}
	return nil
}
