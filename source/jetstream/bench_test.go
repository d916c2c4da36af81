package jetstream_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	natsjs "github.com/nats-io/nats.go/jetstream"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/source/jetstream"
)

// benchStream fills a file-storage stream on an in-process server with n
// messages of size bytes, one subject per key of 16.
func benchStream(b *testing.B, n, size int) (natsjs.JetStream, string) {
	_, js := connect(b, runServer(b).ClientURL())
	st := makeStream(b, js, natsjs.StreamConfig{Storage: natsjs.FileStorage})
	name := st.CachedInfo().Config.Name
	ctx := context.Background()
	data := make([]byte, size)
	for i := range n {
		if _, err := js.PublishAsync(fmt.Sprintf("%s.k%d", name, i%16), data); err != nil {
			b.Fatal(err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(30 * time.Second):
		b.Fatal("publishing timed out")
	}
	if info, err := st.Info(ctx); err != nil || info.State.Msgs != uint64(n) {
		b.Fatalf("stream holds %v messages, %v", info.State.Msgs, err)
	}
	return js, name
}

const (
	benchMessages = 20000
	benchSize     = 256
	benchBatch    = 100
)

// BenchmarkRawRead is the floor: a raw client reading the stream through
// one AckNone pull consumer, in no-wait fetches of benchBatch.
func BenchmarkRawRead(b *testing.B) {
	js, name := benchStream(b, benchMessages, benchSize)
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		cons, err := js.CreateConsumer(ctx, name, natsjs.ConsumerConfig{AckPolicy: natsjs.AckNonePolicy, MemoryStorage: true})
		if err != nil {
			b.Fatal(err)
		}
		got := 0
		for got < benchMessages {
			batch, err := cons.FetchNoWait(benchBatch)
			if err != nil {
				b.Fatal(err)
			}
			for m := range batch.Messages() {
				_ = m.Data()
				got++
			}
			if err := batch.Error(); err != nil {
				b.Fatal(err)
			}
		}
		js.DeleteConsumer(ctx, name, cons.CachedInfo().Name)
	}
	b.ReportMetric(float64(b.N*benchMessages)/b.Elapsed().Seconds(), "records/s")
}

// BenchmarkSourceRead reads the same stream through the driver, as the
// engine does: each Read continues after the previous one's last record.
func BenchmarkSourceRead(b *testing.B) {
	for _, mode := range []string{"all", "partitions-4"} {
		b.Run(mode, func(b *testing.B) {
			js, name := benchStream(b, benchMessages, benchSize)
			var opts []jetstream.Option
			if mode != "all" {
				opts = append(opts, jetstream.WithPartitions(name+".k1", name+".k2", name+".k3", name+".k4"))
			}
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			total := 0
			for range b.N {
				src, err := jetstream.New(ctx, js, name, opts...)
				if err != nil {
					b.Fatal(err)
				}
				shards, _ := src.Shards(ctx)
				got := 0
				for _, shard := range shards {
					var after idem.Sequence
					for {
						res, err := src.Read(ctx, shard, after, benchBatch, 6<<20)
						if err != nil {
							b.Fatal(err)
						}
						if len(res.Records) == 0 {
							break
						}
						got += len(res.Records)
						after = res.Records[len(res.Records)-1].Sequence
					}
				}
				if want := benchMessages * len(shards) / 16; mode == "all" && got != benchMessages || mode != "all" && got != want {
					b.Fatalf("read %d records", got)
				}
				src.Close(ctx)
				total += got
			}
			b.ReportMetric(float64(total)/b.Elapsed().Seconds(), "records/s")
		})
	}
}
