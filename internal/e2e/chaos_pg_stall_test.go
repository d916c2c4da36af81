package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestChaosPostgresStalledOwner runs the transfer example (examples/transfer)
// in two `serve` processes sharing a private PostgreSQL store, with shard
// leases of a 2 s ttl, over a Kafka topic of 4 partitions fed with
// transfers between 200 accounts. Owner A takes every partition; B
// waits. A is then paused with SIGSTOP, as a long GC pause or a VM
// migration would, while its transactions hold row locks of the accounts
// (idle in transaction), and stays paused for 8 ttl.
//
// B must take the partitions over and make progress while A sleeps: each
// partition must complete more than a batch within 5 ttl of the pause (the server
// ends A's idle sessions after a ttl, which releases their locks; B's
// statements that wait for a lock give up after a ttl and run again).
// Once A is resumed, its late commits are refused (fenced, or its session
// is gone), and once every record is processed every balance is the
// opening balance moved by exactly the produced transfers, no record is
// discarded and the store holds no on-failure record.
func TestChaosPostgresStalledOwner(t *testing.T) {
	binaries(t)
	transferBin := filepath.Join(binDir, "transfer")
	const (
		accounts   = 200
		opening    = int64(1_000_000)
		partitions = 4
		ttl        = 2 * time.Second
		stopFor    = 8 * ttl
		topic      = "transfers"
		mapping    = "transfers-to-transfer"
		total      = 4000
		perTick    = 10
		tick       = 50 * time.Millisecond // 200 transfers/s
	)
	pg := startPrivatePostgres(t)
	fc, cl := kafkaTopic(t, topic, partitions)

	rng := rand.New(rand.NewPCG(15, 3))
	transfers := make([]transferData, total)
	for i := range transfers {
		from := rng.IntN(accounts)
		to := (from + 1 + rng.IntN(accounts-1)) % accounts
		transfers[i] = transferData{ID: i, From: fmt.Sprintf("acc-%d", from), To: fmt.Sprintf("acc-%d", to), Amount: 1 + rng.Int64N(1000)}
	}

	dir := t.TempDir()
	config := func(name, addr string) string {
		cfg := filepath.Join(dir, name+".yaml")
		writeFile(t, cfg, fmt.Sprintf(`dataDir: %s
listen: %s
store: {postgres: {dsn: %q, schema: idem}}
lease: {ttl: %s}
streams:
  - {name: transfers-failed}
functions:
  - {name: transfer}
mappings:
  - name: %s
    source: {kafka: {brokers: [%q], topic: %s, pollInterval: 20ms}}
    function: transfer
    startingPosition: TRIM_HORIZON
    batchSize: 50
    retry: {baseDelay: 50ms, maxDelay: 1s}
    destinationConfig: {onFailure: {stream: transfers-failed}}
`, filepath.Join(dir, name+"-data"), addr, pg.dsn+"&pool_max_conns=16", ttl, mapping, fc.ListenAddrs()[0], topic))
		return cfg
	}
	addrA, addrB := freeAddr(t), freeAddr(t)
	cfgA, cfgB := config("a", addrA), config("b", addrB)
	t.Setenv("IDEM_TRANSFER_LOG", filepath.Join(dir, "notify.log"))
	if out, errOut, code := runCLI(t, transferBin, nil, "setup", "-c", cfgA, "--accounts", strconv.Itoa(accounts), "--balance", strconv.FormatInt(opening, 10)); code != 0 {
		t.Fatalf("transfer setup exited with %d: %s%s", code, out, errOut)
	}

	// The producer puts the transfers at a steady pace, as the pause
	// comes and goes.
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	produced := make(chan error, 1)
	wg.Go(func() {
		for i := 0; i < total; i += perTick {
			recs := make([]*kgo.Record, 0, perTick)
			for _, tr := range transfers[i:min(i+perTick, total)] {
				b, _ := json.Marshal(tr)
				recs = append(recs, &kgo.Record{Key: []byte(tr.From), Value: b})
			}
			if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
				produced <- err
				return
			}
			select {
			case <-ctx.Done():
				produced <- ctx.Err()
				return
			case <-time.After(tick):
			}
		}
		produced <- nil
	})
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})

	conn := pg.connect(t)
	qctx, qcancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer qcancel()
	completed := func() int64 {
		t.Helper()
		var n int64
		if err := conn.QueryRow(qctx, `SELECT coalesce(sum(processed), 0) FROM idem.checkpoints WHERE mapping = $1`, mapping).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	byShard := func() map[string]int64 {
		t.Helper()
		rows, err := conn.Query(qctx, `SELECT shard, processed FROM idem.checkpoints WHERE mapping = $1`, mapping)
		if err != nil {
			t.Fatal(err)
		}
		out := make(map[string]int64)
		var shard string
		var n int64
		if _, err := pgx.ForEachRow(rows, []any{&shard, &n}, func() error {
			out[shard] = n
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return out
	}
	idleInTx := func() int {
		t.Helper()
		var n int
		if err := conn.QueryRow(qctx, `SELECT count(*) FROM pg_stat_activity WHERE state = 'idle in transaction' AND pid <> pg_backend_pid()`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}

	a := startServe(t, transferBin, cfgA, addrA)
	apiA := newAPI(addrA)
	eventually(t, time.Minute, "A processing every partition", func() (bool, string) {
		sts, err := apiA.status(context.Background())
		if err != nil {
			return false, err.Error()
		}
		running := 0
		for _, s := range sts {
			if s.State == "running" && s.Processed > 0 {
				running++
			}
		}
		return running == partitions, fmt.Sprintf("A runs %d of %d partitions", running, partitions)
	})
	apiA.closeIdle()
	b := startServe(t, transferBin, cfgB, addrB)

	// Pause A while a transaction of its holds locks: idle in transaction.
	var held int
	for try := 0; ; try++ {
		if err := a.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
		if held = idleInTx(); held > 0 || try == 50 {
			break
		}
		if err := a.cmd.Process.Signal(syscall.SIGCONT); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(10+rng.IntN(50)) * time.Millisecond)
	}
	stopped := time.Now()
	resumed := false
	resume := func() {
		if !resumed {
			resumed = true
			if err := a.cmd.Process.Signal(syscall.SIGCONT); err != nil {
				t.Error(err)
			}
		}
	}
	t.Cleanup(resume)
	base, baseByShard := completed(), byShard()
	t.Logf("A paused with %d sessions idle in transaction; %d records completed", held, base)
	if held == 0 {
		t.Log("no transaction of A was open when it was paused: the pause tests the lease takeover only")
	}

	// B makes progress on every partition while A sleeps: more than one
	// batch each, since a batch that happens to need none of the rows A
	// holds would go through without the bounds on A's transactions.
	var progressAt time.Duration
	eventually(t, 5*ttl, "B completing records of every partition while A is paused", func() (bool, string) {
		now := byShard()
		for p := range partitions {
			shard := topic + "-" + strconv.Itoa(p)
			if now[shard]-baseByShard[shard] <= 50 {
				return false, fmt.Sprintf("records completed by partition since A was paused: %v, at the pause %v (A's idle transactions: %d)", now, baseByShard, idleInTx())
			}
		}
		progressAt = time.Since(stopped)
		return true, ""
	})
	time.Sleep(time.Until(stopped.Add(stopFor)))
	during := completed() - base
	resume()
	t.Logf("B completed more than a batch of every partition %v after A's pause; %d records during its %v", progressAt.Round(100*time.Millisecond), during, stopFor)

	select {
	case err := <-produced:
		if err != nil {
			t.Fatalf("producer: %v", err)
		}
	case <-time.After(3 * time.Minute):
		t.Fatal("the producer did not finish within 3 minutes")
	}
	eventually(t, 3*time.Minute, "every transfer processed", func() (bool, string) {
		n := completed()
		return n == total, fmt.Sprintf("%d of %d records processed", n, total)
	})
	if n := completed(); n != total {
		t.Errorf("checkpoints count %d records processed, want %d: a record counted twice", n, total)
	}

	// Balances: exact, and their sum unchanged.
	expected := make(map[string]int64, accounts)
	for i := range accounts {
		expected[fmt.Sprintf("acc-%d", i)] = opening
	}
	for _, tr := range transfers {
		expected[tr.From] -= tr.Amount
		expected[tr.To] += tr.Amount
	}
	checkBalances(qctx, t, conn, expected, accounts, opening)
	var discarded, failures int64
	if err := conn.QueryRow(qctx, `SELECT coalesce(sum(discarded), 0) FROM idem.checkpoints WHERE mapping = $1`, mapping).Scan(&discarded); err != nil {
		t.Fatal(err)
	}
	if err := conn.QueryRow(qctx, `SELECT count(*) FROM idem.failures`).Scan(&failures); err != nil {
		t.Fatal(err)
	}
	if discarded != 0 || failures != 0 {
		t.Errorf("%d records discarded, %d on-failure records; want none", discarded, failures)
	}

	conflictsB := strings.Count(readFile(t, b.logPath), "conflicted with another")
	conflictsA := strings.Count(readFile(t, a.logPath), "conflicted with another")
	t.Logf("%d transfers; conflicts retried: A %d, B %d; the server saw %d deadlocks, %d lock timeouts, %d sessions ended idle in transaction",
		total, conflictsA, conflictsB, pg.count("deadlock detected"), pg.count("lock timeout"), pg.count("idle-in-transaction timeout"))
	a.kill()
	b.kill()
}

// readFile returns the contents of path, "" if it cannot be read.
func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Log(err)
	}
	return string(b)
}
