package pebbledb

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/idem-run/idem/internal/testsvc"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"

	"github.com/idem-run/idem/store"
)

// hangLimit is how long a call may take before a test calls it hung: far
// beyond anything a working call needs, so that no test asserts timing.
const hangLimit = 30 * time.Second

// withDiskFree replaces the statfs probe with free.
func withDiskFree(free *atomic.Uint64) Option {
	return optionFunc(func(o *options) {
		o.diskFree = func() (uint64, error) { return free.Load(), nil }
	})
}

// ackedPut is a Put that returned success.
type ackedPut struct {
	res  []PutResult
	data []string
}

// checkAcked reopens nothing: it reads every acknowledged record from db
// and checks the shard holds exactly them, in order, without gaps.
func checkAcked(t *testing.T, db *DB, stream string, acked []ackedPut) {
	t.Helper()
	ctx := context.Background()
	want := map[string][]string{}
	for _, a := range acked {
		for i, r := range a.res {
			if uint64(len(want[r.Shard])+1) != r.Sequence {
				t.Fatalf("acknowledged %s/%d after %d records: a refused write left a gap", r.Shard, r.Sequence, len(want[r.Shard]))
			}
			want[r.Shard] = append(want[r.Shard], a.data[i])
		}
	}
	shards, err := db.Shards(stream)
	if err != nil {
		t.Fatal(err)
	}
	for _, sh := range shards {
		res, err := db.Read(ctx, stream, sh, sq(0), 1_000_000, 1<<30)
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Records) != len(want[sh]) {
			t.Fatalf("shard %s holds %d records, %d were acknowledged", sh, len(res.Records), len(want[sh]))
		}
		for i, r := range res.Records {
			if string(r.Data) != want[sh][i] {
				t.Fatalf("shard %s record %d = %q, acknowledged %q", sh, i+1, r.Data, want[sh][i])
			}
		}
	}
}

// within runs f and fails the test if it does not return within hangLimit.
func within(t *testing.T, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	select {
	case <-done:
	case <-time.After(hangLimit):
		t.Fatalf("%s hung for %s", what, hangLimit)
	}
}

// TestDiskFullRefusesWrites: once free space falls below the reserve, every
// kind of write is refused with store.ErrNoSpace, at once and without
// writing anything (no sequence is skipped); Health says so; reads go on;
// and writes resume by themselves once space is freed. Nothing acknowledged
// is lost across a reopen.
func TestDiskFullRefusesWrites(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	var free atomic.Uint64
	free.Store(1 << 40)
	const reserve = 1 << 20
	opts := []Option{WithDiskReserve(reserve), withDiskFree(&free)}
	db, err := Open(dir, opts...)
	if err != nil {
		t.Fatal(err)
	}
	mustCreate(t, db, "s", 2)
	var acked []ackedPut
	put := func(i int) error {
		recs := []PutRecord{{PartitionKey: fmt.Sprint("a", i), Data: fmt.Appendf(nil, "r%d-a", i)}, {PartitionKey: fmt.Sprint("b", i), Data: fmt.Appendf(nil, "r%d-b", i)}}
		var res []PutResult
		var err error
		within(t, "Put", func() { res, err = db.Put(ctx, "s", recs) })
		if err == nil {
			acked = append(acked, ackedPut{res, []string{string(recs[0].Data), string(recs[1].Data)}})
		}
		return err
	}
	i := 0
	for ; i < 10; i++ {
		if err := put(i); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Health(); err != nil {
		t.Fatalf("Health with space = %v", err)
	}

	free.Store(reserve - 1)
	// The probe's answer is cached for a while: writes go on until it is
	// refreshed, and then stop.
	deadline := time.Now().Add(hangLimit)
	for ; ; i++ {
		err := put(i)
		if errors.Is(err, store.ErrNoSpace) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatal("writes were still admitted long after the disk filled")
		}
	}
	for range 5 {
		i++
		if err := put(i); !errors.Is(err, store.ErrNoSpace) || !strings.Contains(err.Error(), "nothing was written") {
			t.Fatalf("Put on a full disk: %v, want store.ErrNoSpace", err)
		}
	}
	key := store.CheckpointKey{Mapping: "m", Stream: "s", Shard: "0"}
	within(t, "Commit", func() {
		err = db.Commit(ctx, &store.Write{Checkpoint: key, NewCheckpoint: store.Checkpoint{Sequence: sq(1)}})
	})
	if !errors.Is(err, store.ErrNoSpace) {
		t.Fatalf("Commit on a full disk: %v", err)
	}
	within(t, "CommitPipelined", func() {
		_, err = db.CommitPipelined(ctx, &store.Write{Checkpoint: key, NewCheckpoint: store.Checkpoint{Sequence: sq(1)}})
	})
	if !errors.Is(err, store.ErrNoSpace) {
		t.Fatalf("CommitPipelined on a full disk: %v", err)
	}
	if err := db.CreateStream("t", 1, time.Hour); !errors.Is(err, store.ErrNoSpace) {
		t.Fatalf("CreateStream on a full disk: %v", err)
	}
	if _, err := db.Claim(ctx, store.MarkKey{1}, store.PayloadHash{}, time.Minute, time.Now()); !errors.Is(err, store.ErrNoSpace) {
		t.Fatalf("Claim on a full disk: %v", err)
	}
	if err := db.Health(); !errors.Is(err, store.ErrNoSpace) || errors.Is(err, ErrFatal) {
		t.Fatalf("Health on a full disk = %v, want store.ErrNoSpace", err)
	}
	if _, ok, err := db.Checkpoint(ctx, key); err != nil || ok {
		t.Fatalf("a refused Commit landed, or reads stopped: %v, %v", ok, err)
	}
	checkAcked(t, db, "s", acked)

	free.Store(reserve)
	i = putUntilResumed(t, put, i)
	if err := db.Health(); err != nil {
		t.Fatalf("Health once space was freed = %v", err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if db, err = Open(dir, opts...); err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	checkAcked(t, db, "s", acked)
	t.Logf("%d puts acknowledged, %d refused", len(acked), i+1-len(acked))
}

// enospc is the error errorfs injects: what a write to a full disk returns.
var errENOSPC = &os.PathError{Op: "write", Path: "wal", Err: syscall.ENOSPC}

// TestFatalDiskFull: when the write-ahead log meets a full disk anyway
// (the reserve is off here), Pebble cannot go on. The DB calls the fatal
// hook instead of returning into Pebble or wedging; every later call fails
// with ErrFatal and store.ErrNoSpace, Health reports it, Close returns
// within a bounded time, and everything acknowledged before survives.
func TestFatalDiskFull(t *testing.T) {
	ctx := context.Background()
	mem := vfs.NewCrashableMem()
	var full atomic.Bool
	fs := errorfs.Wrap(mem, errorfs.InjectorFunc(func(op errorfs.Op) error {
		if full.Load() && (op.Kind == errorfs.OpFileWrite || op.Kind == errorfs.OpFileWriteAt) && strings.HasSuffix(op.Path, ".log") {
			return errENOSPC
		}
		return nil
	}))
	fatal := make(chan string, 10)
	db, err := Open("db", withFS(fs), WithDiskReserve(0), WithFatal(func(msg string) {
		fatal <- msg
		runtime.Goexit()
	}), optionFunc(func(o *options) { o.closeTimeout = 2 * time.Second }))
	if err != nil {
		t.Fatal(err)
	}
	mustCreate(t, db, "s", 1)
	var acked []ackedPut
	for i := range 20 {
		res, err := db.Put(ctx, "s", []PutRecord{{PartitionKey: "k", Data: fmt.Appendf(nil, "r%d", i)}})
		if err != nil {
			t.Fatal(err)
		}
		acked = append(acked, ackedPut{res, []string{fmt.Sprintf("r%d", i)}})
	}

	full.Store(true)
	returned := make(chan error, 1)
	go func() {
		_, err := db.Put(ctx, "s", []PutRecord{{PartitionKey: "k", Data: []byte("lost")}})
		returned <- err
	}()
	select {
	case msg := <-fatal:
		if !strings.Contains(msg, "no space left on device") {
			t.Errorf("fatal message %q does not say the disk is full", msg)
		}
	case err := <-returned:
		t.Fatalf("Put on a full write-ahead log returned %v, want the fatal hook", err)
	case <-time.After(hangLimit):
		t.Fatal("the fatal hook was not called")
	}
	for _, err := range []error{
		db.Health(),
		func() error {
			_, err := db.Put(ctx, "s", []PutRecord{{PartitionKey: "k", Data: []byte("x")}})
			return err
		}(),
		func() error { _, _, err := db.Checkpoint(ctx, store.CheckpointKey{}); return err }(),
	} {
		if !errors.Is(err, ErrFatal) || !errors.Is(err, store.ErrNoSpace) {
			t.Fatalf("after the fatal error: %v, want ErrFatal and store.ErrNoSpace", err)
		}
	}
	within(t, "Close after a fatal error", func() { err = db.Close() })
	if !errors.Is(err, ErrFatal) {
		t.Fatalf("Close after a fatal error = %v, want ErrFatal", err)
	}
	t.Logf("Close: %v", err)

	// What a restart finds: exactly what was synced.
	full.Store(false)
	db, err = Open("db", withFS(mem.CrashClone(vfs.CrashCloneCfg{})))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	checkAcked(t, db, "s", acked)
}

// TestDiskFullTmpfs fills a real, small filesystem (a tmpfs, which needs
// root to mount) through the default statfs probe: writes are refused with
// store.ErrNoSpace before Pebble meets ENOSPC (the fatal hook would fail
// the test), resume once a ballast file is removed, and nothing
// acknowledged is lost. Without root or mount it skips, except under
// CI=true, where it fails.
func TestDiskFullTmpfs(t *testing.T) {
	mnt := testsvc.Tmpfs(t, "48m")
	ballast := filepath.Join(mnt, "ballast")
	if err := os.WriteFile(ballast, make([]byte, 16<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(mnt, "db")
	fatal := make(chan string, 1)
	opts := []Option{WithDiskReserve(8 << 20), WithFatal(func(msg string) {
		fatal <- msg
		runtime.Goexit()
	}), optionFunc(func(o *options) { o.memTableSize = 1 << 20 })}
	db, err := Open(dir, opts...)
	if err != nil {
		t.Fatal(err)
	}
	mustCreate(t, db, "s", 4)
	ctx := context.Background()
	var acked []ackedPut
	// Incompressible data, so that the disk fills as fast as it is written.
	rng := rand.New(rand.NewPCG(1, 2))
	put := func(i int) error {
		data := make([]byte, 64<<10)
		for j := range data {
			data[j] = byte(rng.Uint32())
		}
		d := fmt.Sprintf("%06d-%s", i, data)
		var err error
		var res []PutResult
		within(t, "Put", func() { res, err = db.Put(ctx, "s", []PutRecord{{PartitionKey: fmt.Sprint(i), Data: []byte(d)}}) })
		select {
		case msg := <-fatal:
			t.Fatalf("Pebble met the full disk: %s", msg)
		default:
		}
		if err == nil {
			acked = append(acked, ackedPut{res, []string{d}})
		}
		return err
	}
	i := 0
	for ; ; i++ {
		err := put(i)
		if errors.Is(err, store.ErrNoSpace) {
			t.Logf("refused after %d puts of 64 KiB: %v", len(acked), err)
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if i > 10_000 {
			t.Fatal("a 48 MiB filesystem took 10,000 puts of 64 KiB")
		}
	}
	if err := db.Health(); !errors.Is(err, store.ErrNoSpace) {
		t.Fatalf("Health on a full disk = %v", err)
	}
	if err := os.Remove(ballast); err != nil {
		t.Fatal(err)
	}
	i = putUntilResumed(t, put, i)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if db, err = Open(dir, opts...); err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	checkAcked(t, db, "s", acked)
}

const lockDirEnv = "PEBBLEDB_LOCK_TEST_DIR"

// TestLockedChild holds a DB open for TestOpenLocked until its stdin closes.
// Run alone, it skips.
func TestLockedChild(t *testing.T) {
	dir := os.Getenv(lockDirEnv)
	if dir == "" {
		t.Skip("run by TestOpenLocked")
	}
	db, err := Open(dir)
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	fmt.Println("open")
	var b [1]byte
	os.Stdin.Read(b[:])
	db.Close()
	os.Exit(0)
}

// TestOpenLocked: a second Open of a data directory, in this process or
// another, fails with ErrLocked naming the pid of the holder, rather than
// Pebble's bare "resource temporarily unavailable".
func TestOpenLocked(t *testing.T) {
	if os.Getenv(lockDirEnv) != "" {
		t.Skip("in the child")
	}
	dir := t.TempDir()
	db, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Open(dir)
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), fmt.Sprintf("this process (pid %d)", os.Getpid())) {
		t.Fatalf("second Open in this process: %v", err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, pidFile)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("pid file after Close: %v", err)
	}

	cmd := exec.Command(os.Args[0], "-test.run=^TestLockedChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), lockDirEnv+"="+dir)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer stdin.Close()
	var line [5]byte
	if _, err := stdout.Read(line[:]); err != nil || string(line[:4]) != "open" {
		t.Fatalf("child: %q, %v", line, err)
	}
	_, err = Open(dir)
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), fmt.Sprintf("another idem process (pid %d)", cmd.Process.Pid)) {
		t.Fatalf("Open while another process holds the directory: %v", err)
	}
	t.Logf("%v", err)
	stdin.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("child: %v", err)
	}
	db, err = Open(dir)
	if err != nil {
		t.Fatalf("Open once the other process exited: %v", err)
	}
	db.Close()
}

// BenchmarkAdmit measures what admission control adds to every write: a
// clock read and two atomic operations, and a statfs every 100ms.
func BenchmarkAdmit(b *testing.B) {
	db, err := Open(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := db.admit(100); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// putUntilResumed calls put with the numbers after i until a put succeeds,
// once space was freed: every failure before must be store.ErrNoSpace, and
// writes must resume within hangLimit. It returns the last number put.
func putUntilResumed(t *testing.T, put func(int) error, i int) int {
	t.Helper()
	for deadline := time.Now().Add(hangLimit); ; {
		i++
		err := put(i)
		if err == nil {
			return i
		}
		if !errors.Is(err, store.ErrNoSpace) {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatal("writes did not resume once space was freed")
		}
	}
}
