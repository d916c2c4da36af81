// Package testsvc finds the services integration tests run against, and
// applies the project's rule when one is absent: the test is skipped with
// the reason printed, except under CI=true, where it fails.
package testsvc

import (
	"context"
	"fmt"
	"net"
	"os"
	"testing"
	"time"
)

// Absent skips t (or fails it, under CI=true) because a service is missing.
func Absent(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s (CI=true: integration tests must run)", msg)
	}
	t.Skip(msg)
}

// PostgresDSN returns the DSN of the test PostgreSQL: IDEM_TEST_POSTGRES_DSN,
// or the local server with trust auth and database test.
func PostgresDSN(t testing.TB) string {
	t.Helper()
	dsn := os.Getenv("IDEM_TEST_POSTGRES_DSN")
	if dsn == "" {
		dsn = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
		reachable(t, "PostgreSQL", "127.0.0.1:5432", "IDEM_TEST_POSTGRES_DSN")
	}
	return dsn
}

// RedisAddr returns the address of the test Redis: IDEM_TEST_REDIS_ADDR or
// 127.0.0.1:6379.
func RedisAddr(t testing.TB) string {
	t.Helper()
	addr := os.Getenv("IDEM_TEST_REDIS_ADDR")
	if addr == "" {
		addr = "127.0.0.1:6379"
	}
	reachable(t, "Redis", addr, "IDEM_TEST_REDIS_ADDR")
	return addr
}

func reachable(t testing.TB, name, addr, env string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	if err != nil {
		Absent(t, "%s is not reachable at %s (set %s to use another): %v", name, addr, env, err)
		return
	}
	c.Close()
}
