package jetstream_test

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	natsjs "github.com/nats-io/nats.go/jetstream"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/internal/testsvc"
	"github.com/idem-run/idem/source"
	"github.com/idem-run/idem/source/jetstream"
	"github.com/idem-run/idem/source/sourcetest"
)

// runServer starts an in-process nats-server with JetStream in a temporary
// directory. Its max payload allows 1 MiB records with headers.
func runServer(t testing.TB) *server.Server {
	t.Helper()
	s, err := server.NewServer(&server.Options{
		Host:       "127.0.0.1",
		Port:       -1,
		JetStream:  true,
		StoreDir:   t.TempDir(),
		NoLog:      true,
		NoSigs:     true,
		MaxPayload: 2 << 20,
	})
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		t.Fatal("nats-server did not start")
	}
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	return s
}

func connect(t testing.TB, url string) (*nats.Conn, natsjs.JetStream) {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatalf("connecting to %s: %v", url, err)
	}
	t.Cleanup(nc.Close)
	js, err := natsjs.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := js.AccountInfo(ctx); err != nil {
		testsvc.Absent(t, "JetStream is not enabled at %s: %v", url, err)
	}
	return nc, js
}

var streamSeq atomic.Int64

// uniqueName is a stream name no other test (or test process sharing the
// server) uses.
func uniqueName(prefix string) string {
	return fmt.Sprintf("%s_%d_%d_%d", prefix, os.Getpid(), time.Now().UnixNano()%1e9, streamSeq.Add(1))
}

// makeStream creates a limits stream on "<name>.>" that the test deletes;
// one without a name gets a unique one and memory storage.
func makeStream(t testing.TB, js natsjs.JetStream, cfg natsjs.StreamConfig) natsjs.Stream {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if cfg.Name == "" {
		// Tests that name no stream need no disk: memory storage.
		cfg.Name, cfg.Storage = uniqueName("idem"), natsjs.MemoryStorage
	}
	if cfg.Subjects == nil {
		cfg.Subjects = []string{cfg.Name + ".>"}
	}
	st, err := js.CreateStream(ctx, cfg)
	for attempt := 1; err != nil && attempt < 3 && strings.Contains(err.Error(), "err_code=10049"); attempt++ {
		// The in-process server, under the race detector and a loaded
		// machine, now and then fails to create a file store ("error
		// creating store for stream"); it is the test server's
		// hiccup, not the driver's, and a second attempt succeeds.
		t.Logf("creating stream %s: %v; trying again", cfg.Name, err)
		time.Sleep(50 * time.Millisecond)
		st, err = js.CreateStream(ctx, cfg)
	}
	if err != nil {
		t.Fatalf("creating stream %s: %v", cfg.Name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := js.DeleteStream(ctx, cfg.Name); err != nil && !errors.Is(err, natsjs.ErrStreamNotFound) {
			t.Errorf("deleting stream %s: %v", cfg.Name, err)
		}
	})
	return st
}

func newSource(t testing.TB, js natsjs.JetStream, stream string, opts ...jetstream.Option) *jetstream.Source {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	src, err := jetstream.New(ctx, js, stream, opts...)
	if err != nil {
		t.Fatalf("New(%s): %v", stream, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := src.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return src
}

// harness makes streams for the conformance suite. Its mode says how a
// stream of n shards is partitioned: "default" is the whole stream for
// one shard and WithPartitions for more; "filters" is always WithPartitions;
// "tokens" always WithSubjectTokenPartitioning.
type harness struct {
	nc   *nats.Conn
	js   natsjs.JetStream
	mode string
}

func (h harness) MakeStream(ctx context.Context, t testing.TB, shards int) (source.Driver, sourcetest.Appender, error) {
	name := uniqueName("idem_" + h.mode)
	makeStream(t, h.js, natsjs.StreamConfig{Name: name, MaxAge: 24 * time.Hour, Storage: natsjs.FileStorage})
	var opts []jetstream.Option
	var route func(key string) (subject, shard string)
	switch {
	case h.mode == "tokens":
		opts = append(opts, jetstream.WithSubjectTokenPartitioning(3, shards))
		route = func(key string) (string, string) {
			subj := name + ".k." + tokenOf(key)
			return subj, fmt.Sprintf("partition-%d-of-%d", jetstream.Partition(subj, 3, shards), shards)
		}
	case h.mode == "filters" || shards > 1:
		var filters []string
		for i := range shards {
			filters = append(filters, fmt.Sprintf("%s.p%d.>", name, i))
		}
		opts = append(opts, jetstream.WithPartitions(filters...))
		route = func(key string) (string, string) {
			h := fnv.New32a()
			h.Write([]byte(key))
			p := int(h.Sum32() % uint32(shards))
			return fmt.Sprintf("%s.p%d.%s", name, p, tokenOf(key)), filters[p]
		}
	default:
		route = func(key string) (string, string) { return name + ".k." + tokenOf(key), jetstream.AllShard }
	}
	src, err := jetstream.New(ctx, h.js, name, append(opts, jetstream.WithPollInterval(200*time.Millisecond))...)
	if err != nil {
		return nil, nil, err
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := src.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	app := func(ctx context.Context, key string, data []byte) (string, idem.Sequence, error) {
		subj, shard := route(key)
		m := nats.NewMsg(subj)
		m.Header.Set(jetstream.PartitionKeyHeader, key)
		m.Data = data
		ack, err := h.js.PublishMsg(ctx, m)
		if err != nil {
			return "", "", err
		}
		return shard, idem.SequenceOf(ack.Sequence), nil
	}
	return src, app, nil
}

// tokenOf makes a partition key a subject token.
func tokenOf(key string) string {
	if key != "" && !strings.ContainsAny(key, ".*> \t\r\n") {
		return key
	}
	return fmt.Sprintf("x%x", key)
}

func (h harness) Features() sourcetest.Features {
	// max_payload counts headers: leave room for Idem-Partition-Key.
	max := 1 << 20
	if p := int(h.nc.MaxPayload()) - 1024; p < max {
		max = p
	}
	return sourcetest.Features{MaxRecordBytes: max}
}

// Trim implements sourcetest.Trimmer with a purge of every message below
// through+1, as a retention limit would remove them.
func (h harness) Trim(ctx context.Context, _ testing.TB, d source.Driver, _ string, through idem.Sequence) error {
	n, ok := through.Uint64()
	if !ok {
		return fmt.Errorf("sequence %q", through)
	}
	st, err := h.js.Stream(ctx, d.(*jetstream.Source).Stream())
	if err != nil {
		return err
	}
	return st.Purge(ctx, natsjs.WithPurgeSequence(n+1))
}

func runConformance(t *testing.T, url string) {
	nc, js := connect(t, url)
	for _, mode := range []string{"default", "filters", "tokens"} {
		t.Run(mode, func(t *testing.T) {
			sourcetest.RunConformance(t, harness{nc: nc, js: js, mode: mode})
		})
	}
}

// TestConformance runs the suite against the local NATS server (skipped if
// absent, failed under CI=true).
func TestConformance(t *testing.T) { runConformance(t, testsvc.NATSURL(t)) }

// TestConformanceInProcess runs the suite against an in-process
// nats-server of the version go.mod names.
func TestConformanceInProcess(t *testing.T) { runConformance(t, runServer(t).ClientURL()) }

func publish(t testing.TB, js natsjs.JetStream, subject, data string) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ack, err := js.Publish(ctx, subject, []byte(data))
	if err != nil {
		t.Fatalf("publish %s: %v", subject, err)
	}
	return ack.Sequence
}

func read(t testing.TB, d source.Driver, shard string, after idem.Sequence, limit int) source.ReadResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := d.Read(ctx, shard, after, limit, 1<<30)
	if err != nil {
		t.Fatalf("Read(%s, %q): %v", shard, after, err)
	}
	return res
}

// readAll reads shard to its end in pages of limit.
func readAll(t testing.TB, d source.Driver, shard string, after idem.Sequence, limit int) []idem.Record {
	t.Helper()
	var out []idem.Record
	for {
		res := read(t, d, shard, after, limit)
		if len(res.Records) == 0 {
			return out
		}
		for _, r := range res.Records {
			r.Data = append([]byte(nil), r.Data...)
			out = append(out, r)
			after = r.Sequence
		}
	}
}

// TestPartitionsKeepSubjectOrder: with either partitioning, every message
// is read by exactly the shard its subject belongs to, each subject's
// messages in publish order, and a message's PartitionKey is its subject.
func TestPartitionsKeepSubjectOrder(t *testing.T) {
	_, js := connect(t, runServer(t).ClientURL())
	for _, mode := range []string{"filters", "tokens"} {
		t.Run(mode, func(t *testing.T) {
			st := makeStream(t, js, natsjs.StreamConfig{})
			name := st.CachedInfo().Config.Name
			var opt jetstream.Option
			if mode == "filters" {
				opt = jetstream.WithPartitions(name+".eu.>", name+".us.*", name+".apac.>")
			} else {
				opt = jetstream.WithSubjectTokenPartitioning(3, 4)
			}
			src := newSource(t, js, name, opt)
			subjects := []string{name + ".eu.alice", name + ".us.bob", name + ".eu.carol", name + ".apac.dave", name + ".us.erin", name + ".eu.frank.x"}
			want := map[string][]string{} // subject -> data, in order
			for i := range 300 {
				subj := subjects[(i*7+i/5)%len(subjects)]
				data := fmt.Sprintf("%s#%d", subj, i)
				publish(t, js, subj, data)
				want[subj] = append(want[subj], data)
			}
			shards, err := src.Shards(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			got := map[string][]string{}
			owner := map[string]string{}
			total := 0
			for _, shard := range shards {
				for _, r := range readAll(t, src, shard, "", 7) {
					if r.ShardID != shard || r.Stream != name {
						t.Fatalf("record of shard %s/%s read from shard %s", r.Stream, r.ShardID, shard)
					}
					if o, ok := owner[r.PartitionKey]; ok && o != shard {
						t.Fatalf("subject %s read from shards %s and %s", r.PartitionKey, o, shard)
					}
					owner[r.PartitionKey] = shard
					got[r.PartitionKey] = append(got[r.PartitionKey], string(r.Data))
					total++
				}
			}
			if total != 300 {
				t.Fatalf("read %d records, published 300", total)
			}
			for subj, w := range want {
				if fmt.Sprint(got[subj]) != fmt.Sprint(w) {
					t.Fatalf("subject %s: read %q, published %q", subj, got[subj], w)
				}
			}
			if mode == "tokens" {
				for subj, shard := range owner {
					if want := fmt.Sprintf("partition-%d-of-4", jetstream.Partition(subj, 3, 4)); shard != want {
						t.Fatalf("subject %s in shard %s, want %s", subj, shard, want)
					}
				}
			}
		})
	}
}

// TestPartitionMatchesNATSMapping: Partition computes the partition NATS'
// own {{partition(n,k)}} subject mapping computes.
func TestPartitionMatchesNATSMapping(t *testing.T) {
	s := runServer(t)
	if err := s.GlobalAccount().AddMapping("in.*.*", "out.{{partition(7,2)}}.{{wildcard(1)}}.{{wildcard(2)}}"); err != nil {
		t.Fatal(err)
	}
	nc, _ := connect(t, s.ClientURL())
	sub, err := nc.SubscribeSync("out.>")
	if err != nil {
		t.Fatal(err)
	}
	nc.Flush()
	for i := range 200 {
		key := fmt.Sprintf("customer-%d", i*7919)
		if err := nc.Publish("in.eu."+key, nil); err != nil {
			t.Fatal(err)
		}
		m, err := sub.NextMsg(5 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		want := strings.Split(m.Subject, ".")[1]
		if got := jetstream.Partition("in.eu."+key, 3, 7); fmt.Sprint(got) != want {
			t.Fatalf("Partition(in.eu.%s, 3, 7) = %d, NATS mapped it to %s", key, got, want)
		}
	}
}

// TestLoss: the whole-stream shard counts removed messages exactly; a
// partitioned shard reports 1 for a removed range it did not scan, and
// nothing for one it scanned while running.
func TestLoss(t *testing.T) {
	_, js := connect(t, runServer(t).ClientURL())
	ctx := context.Background()
	st := makeStream(t, js, natsjs.StreamConfig{})
	name := st.CachedInfo().Config.Name
	all := newSource(t, js, name)
	parts := newSource(t, js, name, jetstream.WithPartitions(name+".a", name+".b"))

	// a: one message at 1; b: 2..41.
	publish(t, js, name+".a", "a1")
	for i := range 40 {
		publish(t, js, name+".b", fmt.Sprint("b", i))
	}
	// The running partitioned reader of a reads a1, then finds nothing
	// more while b grows: it has scanned past b's messages.
	res := read(t, parts, name+".a", "", 10)
	if len(res.Records) != 1 || res.Lost != 0 {
		t.Fatalf("a: %d records, %d lost; want 1 and 0", len(res.Records), res.Lost)
	}
	pos := res.Records[0].Sequence
	for range 2 {
		if res := read(t, parts, name+".a", pos, 10); len(res.Records) != 0 || res.Lost != 0 {
			t.Fatalf("a after %s: %d records, %d lost", pos, len(res.Records), res.Lost)
		}
	}
	if err := st.Purge(ctx, natsjs.WithPurgeSequence(31)); err != nil { // removes 1..30
		t.Fatal(err)
	}
	if res := read(t, parts, name+".a", pos, 10); len(res.Records) != 0 || res.Lost != 0 {
		t.Fatalf("running reader of a after a purge of b's scanned messages: %d records, %d lost; want none", len(res.Records), res.Lost)
	}
	// A new Source (a restart) cannot tell: it reports 1, with Trimmed at
	// the purge, and reading from Trimmed loses nothing more.
	fresh := newSource(t, js, name, jetstream.WithPartitions(name+".a", name+".b"))
	res = read(t, fresh, name+".a", pos, 10)
	if res.Lost != 1 || res.Trimmed != idem.SequenceOf(30) || len(res.Records) != 0 {
		t.Fatalf("restarted reader of a: %d records, %d lost, trimmed %q; want 0, 1, 30", len(res.Records), res.Lost, res.Trimmed)
	}
	if res := read(t, fresh, name+".a", res.Trimmed, 10); res.Lost != 0 {
		t.Fatalf("read from Trimmed lost %d", res.Lost)
	}
	// b's reader from the start: 1 (unknown count), then b's 11 remaining.
	res = read(t, parts, name+".b", "", 100)
	if res.Lost != 1 || res.Trimmed != idem.SequenceOf(30) || len(res.Records) != 11 || res.Records[0].Sequence != idem.SequenceOf(31) {
		t.Fatalf("b from the start: %d records, %d lost, trimmed %q", len(res.Records), res.Lost, res.Trimmed)
	}
	// The whole stream counts exactly: 30 removed after "", 25 after 5.
	res = read(t, all, jetstream.AllShard, "", 3)
	if res.Lost != 30 || res.Trimmed != idem.SequenceOf(30) || len(res.Records) != 3 || res.Records[0].Sequence != idem.SequenceOf(31) {
		t.Fatalf("all from the start: %d records from %v, %d lost, trimmed %q; want 3 from 31, 30 lost, trimmed 30", len(res.Records), res.Records, res.Lost, res.Trimmed)
	}
	if res := read(t, all, jetstream.AllShard, idem.SequenceOf(5), 3); res.Lost != 25 {
		t.Fatalf("all after 5: %d lost, want 25", res.Lost)
	}
	// Everything purged: a reader with nothing left learns the loss and
	// moves on; Latest stays the last sequence.
	if err := st.Purge(ctx); err != nil {
		t.Fatal(err)
	}
	res = read(t, all, jetstream.AllShard, idem.SequenceOf(35), 10)
	if res.Lost != 6 || res.Trimmed != idem.SequenceOf(41) || len(res.Records) != 0 || res.Latest != idem.SequenceOf(41) {
		t.Fatalf("all after purging everything: %+v; want 6 lost, trimmed 41, latest 41", res)
	}
	if res := read(t, all, jetstream.AllShard, res.Trimmed, 10); res.Lost != 0 || len(res.Records) != 0 {
		t.Fatalf("after Trimmed: %+v", res)
	}
	seq := publish(t, js, name+".a", "again")
	if res := read(t, all, jetstream.AllShard, idem.SequenceOf(41), 10); res.Lost != 0 || len(res.Records) != 1 || res.Records[0].Sequence != idem.SequenceOf(seq) {
		t.Fatalf("after a new message: %+v", res)
	}
}

func TestNewChecks(t *testing.T) {
	_, js := connect(t, runServer(t).ClientURL())
	ctx := context.Background()
	st := makeStream(t, js, natsjs.StreamConfig{MaxAge: 2 * time.Hour})
	name := st.CachedInfo().Config.Name
	if _, err := jetstream.New(ctx, js, "no_such_stream"); !errors.Is(err, source.ErrStreamNotFound) {
		t.Fatalf("New of a missing stream: %v, want source.ErrStreamNotFound", err)
	}
	_, err := jetstream.New(ctx, js, name,
		jetstream.WithPartitions(name+".a.>", name+".*.b", "bad..subject"),
		jetstream.WithSubjectTokenPartitioning(1, 0),
		jetstream.WithPollInterval(time.Hour))
	for _, want := range []string{"conflict", `"` + name + `.a.>" and "` + name + `.*.b" overlap`, "empty token", "0 partitions", "WithPollInterval"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("New with bad options: %v; want it to mention %q", err, want)
		}
	}
	if src := newSource(t, js, name); src.Retention() != 2*time.Hour {
		t.Fatalf("Retention = %s, want 2h", src.Retention())
	}
	unlimited := makeStream(t, js, natsjs.StreamConfig{MaxMsgs: 100})
	if src := newSource(t, js, unlimited.CachedInfo().Config.Name); src.Retention() != jetstream.UnlimitedRetention {
		t.Fatalf("Retention without MaxAge = %s", src.Retention())
	}
	interest := makeStream(t, js, natsjs.StreamConfig{Retention: natsjs.InterestPolicy})
	if _, err := jetstream.New(ctx, js, interest.CachedInfo().Config.Name); err == nil || !strings.Contains(err.Error(), "retention") {
		t.Fatalf("New over an interest stream: %v, want a retention error", err)
	}
}

// TestPartitionKeyAndArrival: the Idem-Partition-Key header is the
// PartitionKey when present, the subject otherwise; ArrivalTime is when
// the stream stored the message.
func TestPartitionKeyAndArrival(t *testing.T) {
	_, js := connect(t, runServer(t).ClientURL())
	st := makeStream(t, js, natsjs.StreamConfig{})
	name := st.CachedInfo().Config.Name
	src := newSource(t, js, name)
	before := time.Now().Add(-time.Second)
	publish(t, js, name+".plain", "p")
	m := nats.NewMsg(name + ".keyed")
	m.Header.Set(jetstream.PartitionKeyHeader, "order-42")
	m.Data = []byte("k")
	if _, err := js.PublishMsg(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	recs := readAll(t, src, jetstream.AllShard, "", 10)
	if len(recs) != 2 || recs[0].PartitionKey != name+".plain" || recs[1].PartitionKey != "order-42" {
		t.Fatalf("records %+v", recs)
	}
	for _, r := range recs {
		if r.ArrivalTime.Before(before) || r.ArrivalTime.After(time.Now().Add(time.Second)) {
			t.Fatalf("arrival time %s", r.ArrivalTime)
		}
	}
}

// TestCloseLeavesNothing: Close deletes every consumer the Source made, a
// Wait in progress returns, later calls fail with ErrClosed, and a
// Connect-made Source leaves no goroutine behind.
func TestCloseLeavesNothing(t *testing.T) {
	srv := runServer(t)
	_, js := connect(t, srv.ClientURL())
	st := makeStream(t, js, natsjs.StreamConfig{})
	name := st.CachedInfo().Config.Name
	for i := range 20 {
		publish(t, js, fmt.Sprintf("%s.k%d", name, i%3), "x")
	}
	before := runtime.NumGoroutine()
	ctx := context.Background()
	src, err := jetstream.Connect(ctx, srv.ClientURL(), name, jetstream.WithSubjectTokenPartitioning(2, 3), jetstream.WithPollInterval(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	shards, _ := src.Shards(ctx)
	var last idem.Sequence
	for _, sh := range shards {
		for _, r := range readAll(t, src, sh, "", 5) {
			last = r.Sequence
		}
	}
	if _, err := src.Start(ctx, shards[0], source.AtTimestamp, time.Now().Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	if n := consumers(t, st); n == 0 {
		t.Fatal("no consumers while reading")
	}
	// A Wait with nothing to wait for blocks until Close.
	read(t, src, shards[0], last, 10)
	waited := make(chan error, 1)
	go func() { waited <- src.Wait(ctx, shards[0], last) }()
	time.Sleep(100 * time.Millisecond)
	if err := src.Close(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-waited:
		if !errors.Is(err, jetstream.ErrClosed) && err != nil {
			t.Fatalf("Wait during Close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Wait did not return after Close")
	}
	if n := consumers(t, st); n != 0 {
		t.Fatalf("%d consumers left after Close", n)
	}
	if _, err := src.Read(ctx, shards[0], "", 10, 1<<20); !errors.Is(err, jetstream.ErrClosed) {
		t.Fatalf("Read after Close: %v", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<20)
		t.Fatalf("%d goroutines after Close, %d before:\n%s", n, before, buf[:runtime.Stack(buf, true)])
	}
}

func consumers(t testing.TB, st natsjs.Stream) int {
	t.Helper()
	info, err := st.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Consumers
}

// TestWaitCancel: Wait returns promptly when its context is cancelled,
// and wakes for a message on its shard but not on another.
func TestWaitCancel(t *testing.T) {
	_, js := connect(t, runServer(t).ClientURL())
	st := makeStream(t, js, natsjs.StreamConfig{})
	name := st.CachedInfo().Config.Name
	src := newSource(t, js, name, jetstream.WithPartitions(name+".a", name+".b"), jetstream.WithPollInterval(time.Minute))
	res := read(t, src, name+".a", "", 10)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Wait(ctx, name+".a", res.Latest) }()
	time.Sleep(50 * time.Millisecond)
	publish(t, js, name+".b", "other shard")
	select {
	case err := <-done:
		t.Fatalf("Wait of a returned for a message of b: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Wait after cancel: %v", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Wait did not return after cancel")
	}
	go func() { done <- src.Wait(context.Background(), name+".a", res.Latest) }()
	time.Sleep(50 * time.Millisecond)
	publish(t, js, name+".a", "mine")
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Wait did not wake for a message of its shard")
	}
}

// TestReadYourWrites: a message is readable as soon as its publish is
// acknowledged, in every partitioning, even though the server counts a
// consumer's pending messages asynchronously.
func TestReadYourWrites(t *testing.T) {
	_, js := connect(t, runServer(t).ClientURL())
	for _, mode := range []string{"all", "filters", "tokens"} {
		t.Run(mode, func(t *testing.T) {
			st := makeStream(t, js, natsjs.StreamConfig{})
			name := st.CachedInfo().Config.Name
			var opts []jetstream.Option
			shard := jetstream.AllShard
			switch mode {
			case "filters":
				opts = append(opts, jetstream.WithPartitions(name+".a", name+".b"))
				shard = name + ".a"
			case "tokens":
				opts = append(opts, jetstream.WithSubjectTokenPartitioning(2, 2))
				shard = fmt.Sprintf("partition-%d-of-2", jetstream.Partition(name+".a", 2, 2))
			}
			src := newSource(t, js, name, opts...)
			var after idem.Sequence
			for i := range 200 {
				if i%3 == 0 {
					publish(t, js, name+".b", "other")
				}
				seq := publish(t, js, name+".a", fmt.Sprint(i))
				res := read(t, src, shard, after, 10)
				n := len(res.Records)
				if n == 0 || res.Records[n-1].Sequence != idem.SequenceOf(seq) || res.Lost != 0 || (mode != "all" && n != 1) {
					t.Fatalf("read %d after publishing %d: %+v", i, seq, res)
				}
				after = res.Records[n-1].Sequence
			}
		})
	}
}
