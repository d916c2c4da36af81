package engine_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"testing"

	"github.com/jackc/pgx/v5"
	goredis "github.com/redis/go-redis/v9"

	"github.com/idem-run/idem/internal/testsvc"
	"github.com/idem-run/idem/store"
	stembedded "github.com/idem-run/idem/store/embedded"
	"github.com/idem-run/idem/store/postgres"
	"github.com/idem-run/idem/store/redis"
)

// storeKind makes a fresh store of one kind for an engine test.
type storeKind struct {
	name string
	open func(t *testing.T, v *env) store.Driver
}

// storeKinds are the stores the engine's store-dependent tests run with.
var storeKinds = []storeKind{
	{"embedded", func(_ *testing.T, v *env) store.Driver { return stembedded.New(v.db) }},
	{"postgres", func(t *testing.T, _ *env) store.Driver {
		schema := "idem_engine_" + randomHex(6)
		ctx := context.Background()
		s, err := postgres.New(ctx, testsvc.PostgresDSN(t), postgres.WithSchema(schema))
		if err != nil {
			testsvc.Absent(t, "postgres store: %v", err)
		}
		t.Cleanup(func() {
			s.Close()
			if conn, err := pgx.Connect(ctx, testsvc.PostgresDSN(t)); err == nil {
				conn.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE")
				conn.Close(ctx)
			}
		})
		return s
	}},
	{"redis", func(t *testing.T, _ *env) store.Driver {
		prefix := "idem-engine-" + randomHex(6)
		s, err := redis.New(context.Background(), redis.WithAddr(testsvc.RedisAddr(t)), redis.WithPrefix(prefix), redis.WithLogger(testLogger(t)))
		if err != nil {
			testsvc.Absent(t, "redis store: %v", err)
		}
		t.Cleanup(func() {
			s.Close()
			ctx := context.Background()
			c := goredis.NewClient(&goredis.Options{Addr: testsvc.RedisAddr(t)})
			defer c.Close()
			iter := c.Scan(ctx, 0, "{"+prefix+"}:*", 1000).Iterator()
			for iter.Next(ctx) {
				c.Del(ctx, iter.Val())
			}
		})
		return s
	}},
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
