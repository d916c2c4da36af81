package pebbledb

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/idem-run/idem/store"
)

const killDirEnv = "PEBBLEDB_KILL_TEST_DIR"

// TestKillChild is the process TestKill kills: it puts records and commits
// checkpoints from several goroutines and prints each acknowledgement, until
// it is killed. Run alone, it skips.
func TestKillChild(t *testing.T) {
	dir := os.Getenv(killDirEnv)
	if dir == "" {
		t.Skip("run by TestKill")
	}
	// Spills of a few marks each, so that the kill lands before, in and
	// after them.
	db, err := Open(dir, withSpillMarksAt(16))
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	if err := db.CreateStream("k", 4, 24*time.Hour); err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	if err := db.CreateStream("dlq", 1, 24*time.Hour); err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	ctx := context.Background()
	var out sync.Mutex
	ack := func(format string, args ...any) {
		out.Lock()
		fmt.Fprintf(os.Stdout, format+"\n", args...)
		out.Unlock()
	}
	for g := range 8 {
		go func() {
			// Pipelined commits, up to 4 applied and unsynced, each
			// acknowledged once synced.
			type applied struct {
				synced func() error
				seq    int
			}
			var queue []applied
			for i := 0; ; i++ {
				if g%4 == 3 {
					synced, err := db.CommitPipelined(ctx, &store.Write{
						Checkpoint:    store.CheckpointKey{Mapping: "m", Stream: "k", Shard: strconv.Itoa(g)},
						NewCheckpoint: store.Checkpoint{Sequence: sq(i + 1)},
					})
					if err != nil {
						ack("error %v", err)
						return
					}
					queue = append(queue, applied{synced, i + 1})
					if len(queue) == 4 {
						if err := queue[0].synced(); err != nil {
							ack("error %v", err)
							return
						}
						ack("pcp %d %d", g, queue[0].seq)
						queue = queue[1:]
					}
					continue
				}
				if g%2 == 1 {
					// A checkpoint with a mark and a failure record.
					mk := killMark(g, i+1)
					err := db.Commit(ctx, &store.Write{
						Checkpoint:    store.CheckpointKey{Mapping: "m", Stream: "k", Shard: strconv.Itoa(g)},
						NewCheckpoint: store.Checkpoint{Sequence: sq(i + 1)},
						Marks:         []store.Mark{{Key: mk, Expires: time.Now().Add(time.Hour)}},
						Failures:      []store.Failure{{Destination: "dlq", Metadata: fmt.Appendf(nil, "f-%d-%d", g, i)}},
					})
					if err != nil {
						ack("error %v", err)
						return
					}
					ack("cp %d %d", g, i+1)
					continue
				}
				recs := make([]PutRecord, 4)
				for j := range recs {
					recs[j] = PutRecord{PartitionKey: fmt.Sprintf("key-%d-%d", g, j), Data: fmt.Appendf(nil, "d-%d-%d-%d", g, i, j)}
				}
				res, err := db.Put(ctx, "k", recs)
				if err != nil {
					ack("error %v", err)
					return
				}
				for j, r := range res {
					ack("put %s %d %s", r.Shard, r.Sequence, recs[j].Data)
				}
			}
		}()
	}
	time.Sleep(time.Minute) // killed long before
	os.Exit(2)
}

// killMark is the mark TestKillChild commits with checkpoint seq of shard g.
func killMark(g, seq int) (mk store.MarkKey) {
	copy(mk[:], fmt.Sprintf("g%d-%d", g, seq))
	return mk
}

// TestKill: a process killed with SIGKILL in the middle of concurrent Puts,
// Commits (with marks, spilled every few) and pipelined commits loses
// nothing it acknowledged (a pipelined commit is acknowledged once synced).
func TestKill(t *testing.T) {
	if os.Getenv(killDirEnv) != "" {
		t.Skip("in the child")
	}
	want := 3000
	if testing.Short() {
		want = 600
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestKillChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), killDirEnv+"="+dir)
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	type put struct {
		shard string
		seq   uint64
		data  string
	}
	var puts []put
	cps := map[string]uint64{}
	marked := map[int]int{} // shard: the last commit with a mark acknowledged
	commits, pipelined := 0, 0
	sc := bufio.NewScanner(stdout)
	timeout := time.AfterFunc(30*time.Second, func() { cmd.Process.Kill() })
	for len(puts) < want && sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) == 4 && f[0] == "put":
			seq, _ := strconv.ParseUint(f[2], 10, 64)
			puts = append(puts, put{f[1], seq, f[3]})
		case len(f) == 3 && f[0] == "cp":
			seq, _ := strconv.ParseUint(f[2], 10, 64)
			cps[f[1]] = seq
			g, _ := strconv.Atoi(f[1])
			marked[g] = int(seq)
			commits++
		case len(f) == 3 && f[0] == "pcp":
			seq, _ := strconv.ParseUint(f[2], 10, 64)
			cps[f[1]] = seq
			pipelined++
		case len(f) > 0 && f[0] == "error":
			cmd.Process.Kill()
			t.Fatalf("child: %s", sc.Text())
		}
	}
	timeout.Stop()
	// Everything read so far was acknowledged before the kill.
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	if len(puts) < want {
		t.Fatalf("child acknowledged only %d puts before it stopped", len(puts))
	}

	db, err := Open(dir)
	if err != nil {
		t.Fatalf("reopening after kill: %v", err)
	}
	defer db.Close()
	ctx := context.Background()
	for _, p := range puts {
		res, err := db.Read(ctx, "k", p.shard, sq(p.seq-1), 1, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Records) != 1 || res.Records[0].Sequence != sq(p.seq) || string(res.Records[0].Data) != p.data {
			t.Fatalf("acknowledged %s/%d %q lost after kill: read %+v", p.shard, p.seq, p.data, res.Records)
		}
	}
	for g, seq := range cps {
		c, ok, err := db.Checkpoint(ctx, store.CheckpointKey{Mapping: "m", Stream: "k", Shard: g})
		if err != nil || !ok || num(c.Sequence) < seq {
			t.Fatalf("checkpoint %s = %+v, %v, %v after kill; acknowledged %d", g, c, ok, err, seq)
		}
	}
	// Every acknowledged commit's mark is found.
	marks := 0
	for g, last := range marked {
		keys := make([]store.MarkKey, last)
		for i := range keys {
			keys[i] = killMark(g, i+1)
		}
		done := make([]bool, len(keys))
		if err := db.Completed(ctx, keys, time.Now(), done); err != nil {
			t.Fatal(err)
		}
		for i, d := range done {
			if !d {
				t.Fatalf("the mark of acknowledged commit %d of shard %d lost after kill", i+1, g)
			}
		}
		marks += last
	}
	if marks == 0 {
		t.Fatal("no commit with a mark was acknowledged")
	}
	// Every acknowledged failure record is in the destination.
	dlq, err := db.Read(ctx, "dlq", ShardID(0), sq(0), 1_000_000, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	if len(dlq.Records) < commits {
		t.Fatalf("dlq holds %d records, %d commits were acknowledged", len(dlq.Records), commits)
	}
	// Writing resumes above everything acknowledged.
	res, err := db.Put(ctx, "k", []PutRecord{{PartitionKey: "key-0-0", Data: []byte("after")}})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range puts {
		if p.shard == res[0].Shard && p.seq >= res[0].Sequence {
			t.Fatalf("put after kill got %s/%d, at or below acknowledged %d", res[0].Shard, res[0].Sequence, p.seq)
		}
	}
	if pipelined == 0 {
		t.Fatal("no pipelined commit was acknowledged")
	}
	t.Logf("%d puts, %d commits (%d marks found) and %d pipelined commits acknowledged before the kill", len(puts), commits, marks, pipelined)
}
