package redisstream_test

import (
	"context"
	"log"
	"time"

	"github.com/idem-run/idem/source/redisstream"
)

// A stream "orders" of four shards, the Redis keys orders-0 … orders-3,
// whose producers trim entries after a day:
//
//	XADD orders-2 MINID ~ <now-24h in ms> * data '{"id":7}' pk customer-42
func ExampleNew() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	src, err := redisstream.New(ctx,
		redisstream.WithAddr("127.0.0.1:6379"),
		redisstream.WithKeyPrefix("orders", 4),
		redisstream.WithStream("orders"),
		redisstream.WithRetention(24*time.Hour),
	)
	if err != nil {
		log.Fatal(err)
	}
	defer src.Close()
	// src is a source.Driver: hand it to engine.Mapping.Source.
}
