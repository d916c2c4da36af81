package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/idem-run/idem/internal/testsvc"
)

// TestKafkaTwoProcessesShareMapping runs two `idem serve` processes on one
// Kafka mapping with a shared store (PostgreSQL, or DynamoDB: the tests'
// emulator, reached by both processes over HTTP) and shard leases, with
// and without a Kafka consumer group. One is killed with SIGKILL mid-run: the
// other takes its partitions over (when their leases expire, and with a
// group once the group's session ends), no record is lost, and, the
// counter function's state living in the store, no record is counted
// twice. With the group, the two processes first divide the partitions.
func TestKafkaTwoProcessesShareMapping(t *testing.T) {
	t.Run("leases", func(t *testing.T) { testKafkaTwoProcesses(t, false, postgresStore(t)) })
	t.Run("consumer group", func(t *testing.T) { testKafkaTwoProcesses(t, true, postgresStore(t)) })
	t.Run("dynamodb leases", func(t *testing.T) { testKafkaTwoProcesses(t, false, dynamodbStore(t)) })
}

// postgresStore returns the store: line of a schema of its own in the
// tests' PostgreSQL, dropped after the test.
func postgresStore(t *testing.T) string {
	dsn := testsvc.PostgresDSN(t)
	b := make([]byte, 6)
	rand.Read(b)
	schema := "idem_e2e_" + hex.EncodeToString(b)
	t.Cleanup(func() {
		if conn, err := pgx.Connect(context.Background(), dsn); err == nil {
			conn.Exec(context.Background(), "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE")
			conn.Close(context.Background())
		}
	})
	return fmt.Sprintf("store: {postgres: {dsn: %q, schema: %s}}", dsn, schema)
}

// dynamodbStore returns the store: line of a table of its own in the
// tests' DynamoDB endpoint (minidyn, unless IDEM_TEST_DYNAMODB_ENDPOINT).
func dynamodbStore(t *testing.T) string {
	b := make([]byte, 6)
	rand.Read(b)
	return fmt.Sprintf("store: {dynamodb: {table: idem-e2e-%s, region: us-east-1, endpoint: %q}}", hex.EncodeToString(b), testsvc.DynamoDBEndpoint(t))
}

func testKafkaTwoProcesses(t *testing.T, group bool, store string) {
	_, counterBin := binaries(t)
	ctx := context.Background()

	const topic, partitions, keys, n = "orders", 4, 40, 4000
	fc, cl := kafkaTopic(t, topic, partitions)
	want := map[string]int{}
	produce := func(from, to int) {
		recs := make([]*kgo.Record, 0, to-from)
		for i := from; i < to; i++ {
			k := "k" + strconv.Itoa(i%keys)
			want[k]++
			recs = append(recs, &kgo.Record{Key: []byte(k), Value: []byte(strconv.Itoa(i))})
		}
		if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	produce(0, n/2)

	dir := t.TempDir()
	groupKeys := ""
	if group {
		groupKeys = ", group: idem-orders, sessionTimeout: 6s"
	}
	config := func(name, addr string) string {
		cfg := filepath.Join(dir, name+".yaml")
		writeFile(t, cfg, fmt.Sprintf(`dataDir: %s
listen: %s
%s
lease: {ttl: 2s}
streams:
  - {name: orders-failed}
functions:
  - {name: counter}
mappings:
  - name: orders-to-counter
    source: {kafka: {brokers: [%q], topic: %s, pollInterval: 20ms%s}}
    function: counter
    startingPosition: TRIM_HORIZON
    batchSize: 20
    destinationConfig: {onFailure: {stream: orders-failed}}
`, filepath.Join(dir, name+"-data"), addr, store, fc.ListenAddrs()[0], topic, groupKeys))
		return cfg
	}
	addrA, addrB := freeAddr(t), freeAddr(t)
	a := startServe(t, counterBin, config("a", addrA), addrA)
	bProc := startServe(t, counterBin, config("b", addrB), addrB)
	apiB := newAPI(addrB)

	// Let both work, then crash A, while it holds partitions, as records
	// keep coming.
	apiA := newAPI(addrA)
	running := func(api *api) (int, error) {
		sts, err := api.status(ctx)
		n := 0
		for _, s := range sts {
			if s.State == "running" && s.Processed > 0 {
				n++
			}
		}
		return n, err
	}
	eventually(t, time.Minute, "A holding a partition", func() (bool, string) {
		ra, err := running(apiA)
		if err != nil {
			return false, err.Error()
		}
		if !group {
			return ra > 0, "A processes no partition yet"
		}
		rb, err := running(apiB)
		if err != nil {
			return false, err.Error()
		}
		return ra > 0 && rb > 0 && ra+rb == partitions, fmt.Sprintf("A runs %d partitions, B %d: not divided yet", ra, rb)
	})
	apiA.closeIdle()
	a.kill()
	produce(n/2, n)

	eventually(t, 2*time.Minute, "every count exact after A's crash", func() (bool, string) {
		for k, c := range want {
			v, ok, err := apiB.state(ctx, "counter", "count/"+k)
			if err != nil {
				return false, err.Error()
			}
			if !ok || v != strconv.Itoa(c) {
				got, _ := strconv.Atoi(v)
				if got > c {
					t.Fatalf("count/%s = %d, above %d: a record was counted twice", k, got, c)
				}
				return false, fmt.Sprintf("count/%s = %q, want %d", k, v, c)
			}
		}
		return true, ""
	})
	// B holds every partition now.
	sts, err := apiB.status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range sts {
		if s.State != "running" {
			t.Errorf("B's shard %s is %q, want running", s.Shard, s.State)
		}
	}
	apiB.closeIdle()
	if code := bProc.stop(t); code != 0 {
		t.Fatalf("B exited %d, want 0", code)
	}
}
