// Package redisclient makes the go-redis clients of idem's Redis drivers
// (store/redis, source/redisstream), so that both talk to Redis by the same
// rules.
package redisclient

import (
	goredis "github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

// New returns a client of the server at addr, database db. It makes one
// attempt per command, since a driver never retries (the engine does,
// with backoff); it bounds every command by its context; and it leaves
// maintenance notifications off (they need a Redis Enterprise endpoint).
// poolSize 0 keeps go-redis's default.
func New(addr string, db, poolSize int) *goredis.Client {
	return goredis.NewClient(&goredis.Options{
		Addr:                  addr,
		DB:                    db,
		MaxRetries:            -1,
		DialerRetries:         1,
		ContextTimeoutEnabled: true,
		PoolSize:              poolSize,
		MaintNotificationsConfig: &maintnotifications.Config{
			Mode: maintnotifications.ModeDisabled,
		},
	})
}
