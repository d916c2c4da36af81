package pebbledb

import (
	"context"
	"strconv"
	"testing"
	"time"
)

// BenchmarkPut appends batches of 100 records of 200 bytes from concurrent
// producers, each Put durable (pebble.Sync).
func BenchmarkPut(b *testing.B) {
	db, err := Open(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	if err := db.CreateStream("s", 4, 24*time.Hour); err != nil {
		b.Fatal(err)
	}
	const batch = 100
	data := make([]byte, 200)
	b.ReportAllocs()
	b.SetParallelism(4)
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		recs := make([]PutRecord, batch)
		for i := range recs {
			recs[i] = PutRecord{PartitionKey: "key-" + strconv.Itoa(i), Data: data}
		}
		for pb.Next() {
			if _, err := db.Put(context.Background(), "s", recs); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N*batch)/time.Since(start).Seconds(), "records/s")
}

// BenchmarkRead reads a shard in pages of 100 records of 200 bytes.
func BenchmarkRead(b *testing.B) {
	db, err := Open(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	if err := db.CreateStream("s", 1, 24*time.Hour); err != nil {
		b.Fatal(err)
	}
	const total, page = 100_000, 100
	data := make([]byte, 200)
	recs := make([]PutRecord, 1000)
	for i := range recs {
		recs[i] = PutRecord{PartitionKey: "key-" + strconv.Itoa(i), Data: data}
	}
	for range total / len(recs) {
		if _, err := db.Put(context.Background(), "s", recs); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	var after uint64
	for range b.N {
		res, err := db.Read(context.Background(), "s", ShardID(0), sq(after), page, 1<<20)
		if err != nil {
			b.Fatal(err)
		}
		after = num(res.Records[len(res.Records)-1].Sequence) % (total - page)
	}
	b.ReportMetric(float64(b.N*page)/b.Elapsed().Seconds(), "records/s")
}
