package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/idem-run/idem/engine"
)

// TestKafkaCrashExactlyOnce runs the counter example over a Kafka topic (an
// in-process kfake cluster on loopback, which `idem serve` reaches over
// TCP) and kills serve with SIGKILL while it works: every record's counter
// ends at exactly 1 and every key's count is exact, with checkpoints in
// idem's store, not in Kafka's consumer offsets.
func TestKafkaCrashExactlyOnce(t *testing.T) {
	_, counterBin := binaries(t)
	const topic, partitions, keys = "orders", 3, 30
	n, kills := 3000, 8
	if testing.Short() {
		n, kills = 1000, 3
	}
	fc, cl := kafkaTopic(t, topic, partitions)
	ctx := context.Background()
	want := map[string]int{}
	recs := make([]*kgo.Record, 0, n)
	for i := range n {
		k := "k" + strconv.Itoa(i%keys)
		want[k]++
		recs = append(recs, &kgo.Record{Key: []byte(k), Value: []byte(strconv.Itoa(i))})
	}
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	addr := freeAddr(t)
	cfg := filepath.Join(dir, "idem.yaml")
	brokers := fmt.Sprintf("%q", fc.ListenAddrs()[0])
	writeFile(t, cfg, fmt.Sprintf(`dataDir: %s
listen: %s
streams:
  - {name: orders-failed}
functions:
  - {name: counter}
mappings:
  - name: orders-to-counter
    source: {kafka: {brokers: [%s], topic: %s, pollInterval: 20ms}}
    function: counter
    startingPosition: TRIM_HORIZON
    batchSize: 50
    destinationConfig: {onFailure: {stream: orders-failed}}
`, filepath.Join(dir, "idem-data"), addr, brokers, topic))
	a := newAPI(addr)
	for i := range kills {
		p := startServe(t, counterBin, cfg, addr)
		time.Sleep(time.Duration(50+rand.IntN(300)) * time.Millisecond)
		p.kill()
		t.Logf("kill %d", i+1)
	}
	p := startServe(t, counterBin, cfg, addr)
	var sts []engine.ShardStatus
	eventually(t, 2*time.Minute, "the mapping catching up", func() (bool, string) {
		var err error
		if sts, err = a.status(ctx); err != nil {
			return false, err.Error()
		}
		var done uint64
		for _, s := range sts {
			done += s.Processed + s.Skipped + s.Discarded
		}
		return done == uint64(n), fmt.Sprintf("%d of %d resolved", done, n)
	})
	for k, c := range want {
		v, ok, err := a.state(ctx, "counter", "count/"+k)
		if err != nil || !ok || v != strconv.Itoa(c) {
			t.Fatalf("count/%s = %q (%v, %v), want %d: a record ran twice or not at all", k, v, ok, err, c)
		}
	}
	var keysToCheck []string
	for _, s := range sts {
		for off := 1; off <= 5; off++ {
			keysToCheck = append(keysToCheck, fmt.Sprintf("record/%s/%s/%020d", topic, s.Shard, off))
		}
	}
	got, err := a.states(ctx, "counter", keysToCheck)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keysToCheck {
		if got[k] != "1" {
			t.Fatalf("%s = %q, want 1", k, got[k])
		}
	}
	a.closeIdle()
	if code := p.stop(t); code != 0 {
		t.Fatalf("serve exited %d, want 0", code)
	}
}
