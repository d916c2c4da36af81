package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"strconv"
	"strings"

	"github.com/cockroachdb/pebble/v2"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	goredis "github.com/redis/go-redis/v9"

	"github.com/idem-run/idem/internal/pebbledb"
	"github.com/idem-run/idem/store"
	stembedded "github.com/idem-run/idem/store/embedded"
	"github.com/idem-run/idem/store/postgres"
	"github.com/idem-run/idem/store/redis"
)

// storeKind names the store Config.Store selects, for the report.
func storeKind(spec string) string {
	switch {
	case spec == "" || spec == "embedded":
		return "embedded"
	case strings.HasPrefix(spec, "postgres://"), strings.HasPrefix(spec, "postgresql://"):
		return "postgres"
	case strings.HasPrefix(spec, "redis://"):
		return "redis"
	}
	return ""
}

// checkStore refuses a Store setting no scenario can use.
func checkStore(spec string) error {
	if storeKind(spec) == "" {
		return fmt.Errorf("store %q: want embedded, a postgres:// DSN or a redis://host:port[/db] URL", spec)
	}
	return nil
}

func randomSuffix() string {
	b := make([]byte, 6)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// redisOptions parses redis://host:port[/db].
func redisOptions(spec string) (addr string, db int, err error) {
	u, err := url.Parse(spec)
	if err != nil {
		return "", 0, fmt.Errorf("store %q: %w", spec, err)
	}
	if p := strings.Trim(u.Path, "/"); p != "" {
		if db, err = strconv.Atoi(p); err != nil {
			return "", 0, fmt.Errorf("store %q: database %q is not a number", spec, p)
		}
	}
	return u.Host, db, nil
}

// openStore opens a fresh, empty store of the configured kind for one
// scenario: the embedded store over db, or a new schema or key prefix in
// the shared server. cleanup removes what the scenario wrote.
func openStore(ctx context.Context, spec string, db *pebbledb.DB) (st store.Driver, cleanup func(), err error) {
	switch storeKind(spec) {
	case "postgres":
		schema := "idem_bench_" + randomSuffix()
		pg, err := postgres.New(ctx, spec, postgres.WithSchema(schema), postgres.WithLogger(discardLogger()))
		if err != nil {
			return nil, nil, err
		}
		return pg, func() {
			pg.Close()
			if conn, err := pgx.Connect(context.Background(), spec); err == nil {
				conn.Exec(context.Background(), "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE")
				conn.Close(context.Background())
			}
		}, nil
	case "redis":
		addr, n, err := redisOptions(spec)
		if err != nil {
			return nil, nil, err
		}
		prefix := "idem-bench-" + randomSuffix()
		rs, err := redis.New(ctx, redis.WithAddr(addr), redis.WithDB(n), redis.WithPrefix(prefix), redis.WithLogger(discardLogger()))
		if err != nil {
			return nil, nil, err
		}
		return rs, func() {
			rs.Close()
			deleteRedisPrefix(addr, n, "{"+prefix+"}:*")
		}, nil
	}
	return stembedded.New(db), func() {}, nil
}

func deleteRedisPrefix(addr string, db int, match string) {
	ctx := context.Background()
	c := goredis.NewClient(&goredis.Options{Addr: addr, DB: db})
	defer c.Close()
	iter := c.Scan(ctx, 0, match, 1000).Iterator()
	for iter.Next(ctx) {
		c.Del(ctx, iter.Val())
	}
}

// baseline is the idempotency store a Powertools-style library keeps: one
// durable write to claim a record and one to complete it, on the same kind
// of store idem's scenarios use.
type baseline interface {
	claim(ctx context.Context, key string) error
	complete(ctx context.Context, key string) error
	close()
}

func newBaseline(ctx context.Context, spec, dir string) (baseline, error) {
	switch storeKind(spec) {
	case "postgres":
		return newPGBaseline(ctx, spec)
	case "redis":
		addr, n, err := redisOptions(spec)
		if err != nil {
			return nil, err
		}
		return &redisBaseline{c: goredis.NewClient(&goredis.Options{Addr: addr, DB: n}), addr: addr, db: n, prefix: "idem-bench-baseline-" + randomSuffix() + ":"}, nil
	}
	db, err := pebble.Open(dir, &pebble.Options{Logger: quietLogger{}})
	if err != nil {
		return nil, err
	}
	return &pebbleBaseline{db: db}, nil
}

type pebbleBaseline struct{ db *pebble.DB }

func (p *pebbleBaseline) claim(_ context.Context, key string) error {
	return p.db.Set([]byte(key), []byte("INPROGRESS"), pebble.Sync)
}

func (p *pebbleBaseline) complete(_ context.Context, key string) error {
	return p.db.Set([]byte(key), []byte("COMPLETED"), pebble.Sync)
}

func (p *pebbleBaseline) close() { p.db.Close() }

// pgBaseline claims with an INSERT that takes an absent or expired key and
// completes with an UPDATE, each its own committed transaction.
type pgBaseline struct {
	pool   *pgxpool.Pool
	table  string
	dsn    string
	schema string
}

func newPGBaseline(ctx context.Context, dsn string) (*pgBaseline, error) {
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		return nil, err
	}
	schema := "idem_bench_baseline_" + randomSuffix()
	table := pgx.Identifier{schema, "idempotency"}.Sanitize()
	if _, err := pool.Exec(ctx, "CREATE SCHEMA "+pgx.Identifier{schema}.Sanitize()+"; CREATE TABLE "+table+
		" (key text PRIMARY KEY, status text NOT NULL, expires timestamptz NOT NULL)"); err != nil {
		pool.Close()
		return nil, err
	}
	return &pgBaseline{pool: pool, table: table, dsn: dsn, schema: schema}, nil
}

func (p *pgBaseline) claim(ctx context.Context, key string) error {
	tag, err := p.pool.Exec(ctx, "INSERT INTO "+p.table+" (key, status, expires) VALUES ($1, 'INPROGRESS', now() + interval '1 hour') "+
		"ON CONFLICT (key) DO UPDATE SET status = 'INPROGRESS', expires = excluded.expires WHERE "+p.table+".expires < now()", key)
	if err == nil && tag.RowsAffected() != 1 {
		err = fmt.Errorf("key %s is already claimed", key)
	}
	return err
}

func (p *pgBaseline) complete(ctx context.Context, key string) error {
	_, err := p.pool.Exec(ctx, "UPDATE "+p.table+" SET status = 'COMPLETED', expires = now() + interval '1 day' WHERE key = $1", key)
	return err
}

func (p *pgBaseline) close() {
	p.pool.Exec(context.Background(), "DROP SCHEMA IF EXISTS "+pgx.Identifier{p.schema}.Sanitize()+" CASCADE")
	p.pool.Close()
}

// redisBaseline claims with SET NX and completes with SET, as a Redis
// idempotency store does.
type redisBaseline struct {
	c      *goredis.Client
	addr   string
	db     int
	prefix string
}

func (r *redisBaseline) claim(ctx context.Context, key string) error {
	ok, err := r.c.SetNX(ctx, r.prefix+key, "INPROGRESS", 0).Result()
	if err == nil && !ok {
		err = fmt.Errorf("key %s is already claimed", key)
	}
	return err
}

func (r *redisBaseline) complete(ctx context.Context, key string) error {
	return r.c.Set(ctx, r.prefix+key, "COMPLETED", 0).Err()
}

func (r *redisBaseline) close() {
	r.c.Close()
	deleteRedisPrefix(r.addr, r.db, r.prefix+"*")
}
