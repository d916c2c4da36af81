package kafka

import (
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// BenchmarkRecords converts one Read's 10,000 kgo records to idem records,
// the part of a Kafka Read that runs on the engine's side of the fetch:
//
//	go test -run '^$' -bench Records ./source/kafka/
func BenchmarkRecords(b *testing.B) {
	recs := make([]*kgo.Record, 10_000)
	for i := range recs {
		recs[i] = &kgo.Record{Key: fmt.Appendf(nil, "k%d", i%100), Value: make([]byte, 100), Offset: int64(i), Timestamp: time.Now()}
	}
	s := &Source{topic: "bench"}
	b.ReportAllocs()
	for b.Loop() {
		s.records("bench-0", recs)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(recs)), "ns/record")
}
