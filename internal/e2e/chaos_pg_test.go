package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/idem-run/idem/engine"
	"github.com/idem-run/idem/internal/testsvc"
	"github.com/idem-run/idem/server"
)

// privatePG is a PostgreSQL server of one test, in a data directory of its
// own on a free port, so that the test can crash and restart it without
// disturbing the tests of other packages, which share 127.0.0.1:5432.
type privatePG struct {
	bin  string // the directory of initdb and pg_ctl
	base string // holds data/, the server's log and its socket
	data string
	log  string
	port string
	dsn  string              // for the test's own connections
	cred *syscall.Credential // the postgres user's, when the test runs as root
}

// startPrivatePostgres initializes a cluster with initdb (as the postgres
// user when the test runs as root, which PostgreSQL refuses to run as) and
// starts it on a free 127.0.0.1 port with fsync on and trust
// authentication. A cleanup stops it and removes its directory. Without
// PostgreSQL's server binaries the test is skipped (failed under CI=true).
func startPrivatePostgres(t *testing.T) *privatePG {
	t.Helper()
	bin := postgresBinDir()
	if bin == "" {
		testsvc.Absent(t, "PostgreSQL's initdb and pg_ctl are not installed (looked in /usr/lib/postgresql/*/bin and PATH)")
		return nil
	}
	p := &privatePG{bin: bin}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			testsvc.Absent(t, "running as root, and there is no postgres user to run PostgreSQL as: %v", err)
			return nil
		}
		uid, _ := strconv.ParseUint(u.Uid, 10, 32)
		gid, _ := strconv.ParseUint(u.Gid, 10, 32)
		p.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	}
	// Not t.TempDir: its parents are root's and closed to the postgres user.
	base, err := os.MkdirTemp("", "idem-chaos-pg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	if p.cred != nil {
		if err := os.Chown(base, int(p.cred.Uid), int(p.cred.Gid)); err != nil {
			t.Fatal(err)
		}
	}
	p.base, p.data, p.log = base, filepath.Join(base, "data"), filepath.Join(base, "postgres.log")
	_, p.port, _ = strings.Cut(freeAddr(t), ":")
	p.dsn = "postgres://postgres@127.0.0.1:" + p.port + "/postgres?sslmode=disable"

	if out, err := p.run(2*time.Minute, "initdb", "-D", p.data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-locale"); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	opts := strings.Join([]string{
		"-p " + p.port,
		"-c listen_addresses=127.0.0.1",
		"-c unix_socket_directories=" + base,
		"-c fsync=on",
		"-c synchronous_commit=on",
		"-c full_page_writes=on",
		"-c max_connections=200",
		// Transfers of concurrent batches deadlock now and then (a batch
		// holds its rows until it commits): find out sooner than the
		// default second.
		"-c deadlock_timeout=20ms",
		// One line per error, so that the log's tail shows more than the
		// last deadlock.
		"-c log_error_verbosity=terse",
		"-c log_min_error_statement=panic",
	}, " ")
	if out, err := p.run(2*time.Minute, "pg_ctl", "-D", p.data, "-l", p.log, "-o", opts, "-w", "-t", "90", "start"); err != nil {
		t.Fatalf("pg_ctl start: %v\n%s\n%s", err, out, p.tail(20))
	}
	t.Cleanup(func() {
		if out, err := p.run(time.Minute, "pg_ctl", "-D", p.data, "-m", "immediate", "-w", "stop"); err != nil {
			t.Errorf("pg_ctl stop: %v\n%s", err, out)
		}
		if t.Failed() {
			t.Logf("end of the private PostgreSQL's log:\n%s", p.tail(30))
		}
	})
	return p
}

// postgresBinDir returns the directory of the newest installed initdb and
// pg_ctl, or "".
func postgresBinDir() string {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	slices.SortFunc(dirs, func(a, b string) int {
		va, _ := strconv.Atoi(filepath.Base(filepath.Dir(a)))
		vb, _ := strconv.Atoi(filepath.Base(filepath.Dir(b)))
		return vb - va
	})
	for _, d := range dirs {
		if isFile(filepath.Join(d, "initdb")) && isFile(filepath.Join(d, "pg_ctl")) {
			return d
		}
	}
	if i, err := exec.LookPath("initdb"); err == nil {
		if c, err := exec.LookPath("pg_ctl"); err == nil && filepath.Dir(i) == filepath.Dir(c) {
			return filepath.Dir(i)
		}
	}
	return ""
}

func isFile(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular()
}

// run runs one of PostgreSQL's programs as the server's user and returns
// its output. The output goes to a file, not a pipe: pg_ctl leaves the
// server running, which would hold a pipe open.
func (p *privatePG) run(timeout time.Duration, prog string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	out, err := os.CreateTemp("", "idem-chaos-pg-out-")
	if err != nil {
		return "", err
	}
	defer os.Remove(out.Name())
	defer out.Close()
	cmd := exec.CommandContext(ctx, filepath.Join(p.bin, prog), args...)
	cmd.Dir = p.base
	cmd.Stdout, cmd.Stderr = out, out
	if p.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: p.cred}
		cmd.Env = append(os.Environ(), "HOME="+p.base, "USER=postgres", "LOGNAME=postgres")
	}
	err = cmd.Run()
	b, _ := os.ReadFile(out.Name())
	return string(b), err
}

// restart crashes the server (pg_ctl restart -m immediate: no shutdown
// checkpoint, crash recovery at start) and waits until it accepts
// connections again.
func (p *privatePG) restart(t *testing.T) time.Duration {
	t.Helper()
	start := time.Now()
	if out, err := p.run(2*time.Minute, "pg_ctl", "-D", p.data, "-l", p.log, "-m", "immediate", "-w", "-t", "90", "restart"); err != nil {
		t.Fatalf("pg_ctl restart: %v\n%s\n%s", err, out, p.tail(20))
	}
	return time.Since(start)
}

// tail returns the last n lines of the server's log.
func (p *privatePG) tail(n int) string {
	b, err := os.ReadFile(p.log)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// count returns how many lines of the server's log contain s.
func (p *privatePG) count(s string) int {
	b, _ := os.ReadFile(p.log)
	return bytes.Count(b, []byte(s))
}

// connect opens a connection of the test's own.
func (p *privatePG) connect(t *testing.T) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, p.dsn)
	if err != nil {
		t.Fatalf("connecting to the private PostgreSQL: %v", err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// transferData is a record of the transfer example, with the number of the
// transfer (which the example ignores) so that the test can find each put
// in the stream.
type transferData struct {
	ID     int    `json:"id"`
	From   string `json:"from"`
	To     string `json:"to"`
	Amount int64  `json:"amount"`
}

// ledgerMapping is the mapping of TestChaosPostgresTransfers whose
// function, ledger, writes each transfer with a deferred INSERT, which a
// batch sends as one INSERT of its rows.
const ledgerMapping = "transfers-to-ledger"

// transferConfig returns the configuration of TestChaosPostgresTransfers.
func transferConfig(addr, dsn string, shards, batchSize, factor int) string {
	return fmt.Sprintf(`listen: %s
store:
  postgres: {dsn: %q, schema: idem}
streams:
  - {name: transfers, shards: %d}
  - {name: transfers-failed}
functions:
  - {name: transfer}
  - {name: ledger}
mappings:
  - name: transfers-to-transfer
    source: {stream: transfers}
    function: transfer
    startingPosition: TRIM_HORIZON
    batchSize: %d
    parallelizationFactor: %d
    retry: {baseDelay: 50ms, maxDelay: 1s}
    destinationConfig: {onFailure: {stream: transfers-failed}}
  - name: %s
    source: {stream: transfers}
    function: ledger
    startingPosition: TRIM_HORIZON
    batchSize: 100
    retry: {baseDelay: 50ms, maxDelay: 1s}
    destinationConfig: {onFailure: {stream: transfers-failed}}
`, addr, dsn, shards, batchSize, factor, ledgerMapping)
}

// produceTransfers puts transfers, in POSTs of perPost records with the
// partition key of their from account, pausing pace after each. A POST that
// fails because the server is down is sent again, and may then append its
// records twice: the stream holds the truth.
func produceTransfers(ctx context.Context, a *api, stream string, transfers []transferData, perPost int, pace time.Duration) producerResult {
	recs := make([]server.PutRecord, len(transfers))
	for i, tr := range transfers {
		b, _ := json.Marshal(tr)
		recs[i] = server.PutRecord{PartitionKey: tr.From, Data: string(b)}
	}
	return putAll(ctx, a, stream, "transfers", recs, perPost, pace)
}

// fileSize returns the size of path, 0 when it does not exist.
func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// TestChaosPostgresTransfers runs the transfer example (examples/transfer)
// on a private PostgreSQL: 20,000 transfers between 1,000 accounts (4,000 with
// -short) are put through the API while `serve` is killed with SIGKILL at
// random moments and restarted, 20 times (5 with -short), and PostgreSQL
// itself crashes and restarts once (pg_ctl restart -m immediate) in the
// middle. Each transfer's two UPDATEs run in idem's transaction; its
// journaled step "notify" appends the step's key to a log file. A second
// mapping of the stream, to the function ledger, defers an INSERT of a
// ledger row per record, which each batch sends as one INSERT of its rows
// (store/postgres/multirow.go).
//
// Once every shard is caught up it asserts, from the stream read back
// (each record in it is one transfer, a POST sent again included):
//
//   - every account's balance is the opening balance moved by exactly the
//     stream's transfers, and the sum of the balances is unchanged;
//   - the ledger holds one row per record of the stream (its key is the
//     record's), moving the stream's total;
//   - each shard of both mappings counts every record processed, none
//     discarded, and the
//     store holds no on-failure record;
//   - every record's step is COMPLETED in the store's journal, none is in
//     progress;
//   - the log holds every record's step key, and a key twice only where an
//     attempt was interrupted between its write and its journal entry.
//
// That last point is checked by where each line is in the log. The test
// notes the log's size after each kill (the killed process is dead, and
// no one else writes), which cuts the log into the lines of each process.
// A step that completed never runs again, so each line of a key but the
// last must be an attempt that did not complete: either its process was
// killed afterwards (the key's next line is a later process's, and each
// killed process can leave at most one such line per invocation it had in
// flight) or it is the process alive when PostgreSQL crashed (journaling
// the step failed, and the attempt ran again in the same process, at most
// once per connection of the pool). Any other repeated key is a completed
// step that ran again, and fails the test.
func TestChaosPostgresTransfers(t *testing.T) {
	binaries(t)
	transferBin := filepath.Join(binDir, "transfer")
	const (
		accounts  = 1000
		opening   = int64(1_000_000)
		shards    = 4
		batchSize = 50
		factor    = 2
		poolConns = 24
		perPost   = 100
		mapping   = "transfers-to-transfer"
		stream    = "transfers"
	)
	total, kills := 20000, 20
	if testing.Short() {
		total, kills = 4000, 5
	}
	pgRestartAt := kills / 2 // during the life of this process (0-based)
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("IDEM_E2E_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("IDEM_E2E_SEED: %v", err)
		}
		seed = v
	}
	t.Logf("kill schedule seed %d (IDEM_E2E_SEED=%d repeats it)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))

	// The transfers are the same in every run.
	trng := rand.New(rand.NewPCG(4, 2))
	transfers := make([]transferData, total)
	for i := range transfers {
		from := trng.IntN(accounts)
		to := (from + 1 + trng.IntN(accounts-1)) % accounts
		transfers[i] = transferData{ID: i, From: fmt.Sprintf("acc-%d", from), To: fmt.Sprintf("acc-%d", to), Amount: 1 + trng.Int64N(1000)}
	}

	pg := startPrivatePostgres(t)
	dir := t.TempDir()
	addr := freeAddr(t)
	cfg := filepath.Join(dir, "idem.yaml")
	writeFile(t, cfg, transferConfig(addr, pg.dsn+"&pool_max_conns="+strconv.Itoa(poolConns), shards, batchSize, factor))
	data := filepath.Join(dir, "data")
	notifyLog := filepath.Join(dir, "notify.log")
	t.Setenv("IDEM_TRANSFER_LOG", notifyLog)
	if out, errOut, code := runCLI(t, transferBin, nil, "setup", "-c", cfg, "--accounts", strconv.Itoa(accounts), "--balance", strconv.FormatInt(opening, 10)); code != 0 {
		t.Fatalf("transfer setup exited with %d: %s%s", code, out, errOut)
	}
	a := newAPI(addr)
	start := time.Now()

	pace := time.Duration(kills) * 500 * time.Millisecond / time.Duration(total/perPost)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	var wg sync.WaitGroup
	results := make(chan producerResult, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		results <- produceTransfers(ctx, a, stream, transfers, perPost, pace)
	}()
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})

	// boundaries[k] is the log's size once process k was killed: its lines
	// are those below it and at or above boundaries[k-1].
	var boundaries []int64
	died := 0 // processes that had exited before their kill
	var pgDowntime time.Duration
	for i := 0; i < kills; i++ {
		srv := startServe(t, transferBin, cfg, addr, "--data", data)
		time.Sleep(time.Duration(100+rng.IntN(501)) * time.Millisecond)
		if i == pgRestartAt {
			pgDowntime = pg.restart(t)
			t.Logf("PostgreSQL crashed and restarted during process %d (%v)", i+1, pgDowntime.Round(time.Millisecond))
			time.Sleep(time.Duration(100+rng.IntN(501)) * time.Millisecond)
		}
		select {
		case <-srv.done:
			died++
			t.Errorf("serve (process %d) exited by itself before it was killed (%v):\n%s", i+1, srv.cmd.ProcessState, srv.tail(20))
		default:
		}
		srv.kill()
		boundaries = append(boundaries, fileSize(t, notifyLog))
	}
	srv := startServe(t, transferBin, cfg, addr, "--data", data)

	var res producerResult
	select {
	case res = <-results:
	case <-time.After(5 * time.Minute):
		t.Fatal("the producer did not finish within 5 minutes")
	}
	if res.err != nil {
		t.Fatalf("producer: %v", res.err)
	}
	producedAt := time.Since(start)
	statuses := waitCaughtUp(t, a, mapping, stream, 3*time.Minute)
	ledgerStatuses := waitCaughtUp(t, a, ledgerMapping, stream, time.Minute)
	caughtUpAt := time.Since(start)

	// The stream is the ground truth: each of its records is one transfer.
	byShard, err := a.allRecords(context.Background(), stream)
	if err != nil {
		t.Fatal(err)
	}
	expected := make(map[string]int64, accounts)
	for i := range accounts {
		expected[fmt.Sprintf("acc-%d", i)] = opening
	}
	stepKeys := make(map[string]bool) // the notify step's key of every record
	bySeq := make(map[string]string)  // shard/sequence → data
	seen := make([]int, total)
	inStream := 0
	var skipped, moved int64
	for shard, recs := range byShard {
		for _, st := range []engine.ShardStatus{statuses[shard], ledgerStatuses[shard]} {
			skipped += int64(st.Skipped)
			if st.Discarded != 0 || st.Lost != 0 {
				t.Errorf("%s shard %s: discarded %d, lost %d; want 0", st.Mapping, shard, st.Discarded, st.Lost)
			}
			if st.Processed != uint64(len(recs)) {
				t.Errorf("%s shard %s: processed %d, the shard holds %d records (skipped %d)", st.Mapping, shard, st.Processed, len(recs), st.Skipped)
			}
		}
		for _, r := range recs {
			var tr transferData
			if err := json.Unmarshal([]byte(r.Data), &tr); err != nil {
				t.Fatalf("record %s/%s: %v", shard, r.SequenceNumber, err)
			}
			if tr.ID < 0 || tr.ID >= total || transfers[tr.ID] != tr {
				t.Fatalf("record %s/%s holds %s, which was not put", shard, r.SequenceNumber, r.Data)
			}
			seen[tr.ID]++
			expected[tr.From] -= tr.Amount
			expected[tr.To] += tr.Amount
			moved += tr.Amount
			stepKeys["transfer/"+stream+"/"+shard+"/"+r.SequenceNumber+"/notify"] = true
			bySeq[shard+"/"+r.SequenceNumber] = r.Data
			inStream++
		}
	}
	for _, ak := range res.acks {
		if got, ok := bySeq[ak.shard+"/"+ak.seq]; !ok || got != ak.data {
			t.Errorf("acknowledged record %s/%s (%s) is not in the stream as put: found %q", ak.shard, ak.seq, ak.data, got)
		}
	}
	for id, n := range seen {
		if n == 0 {
			t.Errorf("transfer %d is not in the stream", id)
		}
	}

	// Balances: exact, and their sum unchanged.
	conn := pg.connect(t)
	qctx, qcancel := context.WithTimeout(context.Background(), time.Minute)
	defer qcancel()
	checkBalances(qctx, t, conn, expected, accounts, opening)
	// The ledger: a row for each record of the stream (a second row for
	// one would have failed on its key, and been discarded).
	var ledgerRows, ledgerSum int64
	if err := conn.QueryRow(qctx, `SELECT count(*), coalesce(sum(amount), 0) FROM transfer_ledger`).Scan(&ledgerRows, &ledgerSum); err != nil {
		t.Fatal(err)
	}
	if ledgerRows != int64(inStream) || ledgerSum != moved {
		t.Errorf("the ledger holds %d rows moving %d, the stream %d records moving %d", ledgerRows, ledgerSum, inStream, moved)
	}
	var failures int
	if err := conn.QueryRow(qctx, `SELECT count(*) FROM idem.failures`).Scan(&failures); err != nil {
		t.Fatal(err)
	}
	if failures != 0 {
		t.Errorf("the store holds %d on-failure records, want none", failures)
	}

	// The journal: every record's step completed, and none is in progress.
	// A step's claim carries the SHA-256 of its key as its payload hash
	// (engine/journal.go).
	claims := make(map[[sha256.Size]byte]string)
	rows, err := conn.Query(qctx, `SELECT payload_hash, status FROM idem.claims`)
	if err != nil {
		t.Fatal(err)
	}
	var hash []byte
	var status string
	if _, err := pgx.ForEachRow(rows, []any{&hash, &status}, func() error {
		claims[[sha256.Size]byte(hash)] = status
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	inProgress, notJournaled := 0, 0
	for _, s := range claims {
		if s != "COMPLETED" {
			inProgress++
		}
	}
	for k := range stepKeys {
		if claims[sha256.Sum256([]byte(k))] != "COMPLETED" {
			if notJournaled++; notJournaled <= 10 {
				t.Errorf("step %s is not COMPLETED in the journal", k)
			}
		}
	}
	if inProgress != 0 || notJournaled != 0 || len(claims) != len(stepKeys) {
		t.Errorf("journal: %d claims, %d not completed, %d records' steps not completed; want %d completed claims", len(claims), inProgress, notJournaled, len(stepKeys))
	}

	a.closeIdle()
	if code := srv.stop(t); code != 0 {
		t.Errorf("serve exited with %d after SIGTERM, want 0", code)
	}

	// The log: every key, and a key twice only after an interrupted attempt.
	logData, err := os.ReadFile(notifyLog)
	if err != nil {
		t.Fatal(err)
	}
	if len(logData) > 0 && logData[len(logData)-1] != '\n' {
		t.Errorf("the log does not end with a newline")
	}
	segments := make(map[string][]int) // key → the process of each of its lines
	offset, lines, strangers := int64(0), 0, 0
	for _, line := range bytes.SplitAfter(logData, []byte("\n")) {
		if len(line) == 0 {
			continue
		}
		seg, _ := slices.BinarySearchFunc(boundaries, offset, func(b, off int64) int {
			if b <= off {
				return -1
			}
			return 1
		})
		offset += int64(len(line))
		lines++
		key := strings.TrimSuffix(string(line), "\n")
		if !stepKeys[key] {
			if strangers++; strangers <= 10 {
				t.Errorf("log line %d, %q, is no record's step key", lines, key)
			}
			continue
		}
		segments[key] = append(segments[key], seg)
	}
	missing := 0
	for k := range stepKeys {
		if len(segments[k]) == 0 {
			if missing++; missing <= 10 {
				t.Errorf("step key %s is not in the log", k)
			}
		}
	}
	if missing > 0 {
		t.Errorf("%d of %d records' step keys are not in the log", missing, len(stepKeys))
	}
	killDups := make(map[int]int) // process → its lines of steps it did not complete
	pgDups, badDups := 0, 0
	for k, segs := range segments {
		for j := 0; j+1 < len(segs); j++ {
			switch s := segs[j]; {
			case s < segs[j+1]:
				killDups[s]++
			case s == pgRestartAt:
				pgDups++
			default:
				if badDups++; badDups <= 10 {
					t.Errorf("step key %s is in the log twice from process %d, which was not killed after the first nor saw PostgreSQL crash: a completed step ran again", k, s+1)
				}
			}
		}
	}
	limit := shards * factor
	for s, n := range killDups {
		if n > limit {
			t.Errorf("process %d left %d lines of steps it did not complete, more than the %d invocations it could have in flight", s+1, n, limit)
		}
	}
	if pgDups > poolConns+limit {
		t.Errorf("%d lines of steps that PostgreSQL's crash interrupted, more than the pool's %d connections plus %d invocations", pgDups, poolConns, limit)
	}
	dups := pgDups + badDups
	for _, n := range killDups {
		dups += n
	}
	t.Logf("%d kills with SIGKILL (%d processes had died by themselves), PostgreSQL crashed and restarted once (%v), %d deadlocks between transfers resolved by PostgreSQL; %d transfers, %d records in the stream (%d put twice by POSTs sent again; %d POSTs failed), %d skipped after restarts; ledger: %d rows; "+
		"log: %d lines, %d keys, %d repeated lines (%d after a kill, %d after PostgreSQL's crash, %d unexplained), by killed process %v; produced in %v, caught up in %v, total %v",
		kills, died, pgDowntime.Round(time.Millisecond), pg.count("deadlock detected"), total, inStream, inStream-total, res.failedPosts, skipped, ledgerRows,
		lines, len(segments), dups, dups-pgDups-badDups, pgDups, badDups, killDups,
		producedAt.Round(time.Millisecond), caughtUpAt.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
}

// checkBalances compares every row of transfer_accounts with expected: as
// many accounts as accounts, each with its expected balance (the first 20
// that differ are named), and their sum unchanged from the openings.
func checkBalances(ctx context.Context, t *testing.T, conn *pgx.Conn, expected map[string]int64, accounts int, opening int64) {
	t.Helper()
	rows, err := conn.Query(ctx, `SELECT id, balance FROM transfer_accounts`)
	if err != nil {
		t.Fatal(err)
	}
	var id string
	var balance, sum int64
	n, wrong := 0, 0
	if _, err := pgx.ForEachRow(rows, []any{&id, &balance}, func() error {
		n++
		sum += balance
		if want, ok := expected[id]; !ok || balance != want {
			if wrong++; wrong <= 20 {
				t.Errorf("account %s: balance %d, want %d (the opening %d moved by the transfers)", id, balance, want, opening)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if wrong > 0 {
		t.Errorf("%d of %d balances are wrong", wrong, accounts)
	}
	if n != accounts {
		t.Errorf("transfer_accounts holds %d accounts, want %d", n, accounts)
	}
	if want := int64(accounts) * opening; sum != want {
		t.Errorf("the balances sum to %d, want %d", sum, want)
	}
}
