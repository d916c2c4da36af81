package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// defaultDSN is the PostgreSQL the benchmark writes to unless
// IDEM_PEERS_PG names another.
const defaultDSN = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"

// options are the command's flags.
type options struct {
	records        int
	dbosRecords    int
	rounds         int
	partitions     []int
	batch          int
	watermillBatch int
	dbosWorkers    int
	dbosSeparateDB bool
	only           []string
	json           bool
	verbose        bool
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "peers:", err)
		os.Exit(1)
	}
}

func run() error {
	opts, err := parseFlags(os.Args[1:])
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	dsn := os.Getenv("IDEM_PEERS_PG")
	if dsn == "" {
		dsn = defaultDSN
	}
	admin, err := pgxpool.New(ctx, dsn)
	if err != nil {
		return fmt.Errorf("opening PostgreSQL (IDEM_PEERS_PG): %w", err)
	}
	defer admin.Close()
	if err := admin.Ping(ctx); err != nil {
		return fmt.Errorf("PostgreSQL is not reachable (set IDEM_PEERS_PG): %w", err)
	}
	systems := selectSystems(opts)
	if len(systems) == 0 {
		return fmt.Errorf("-only %q matches no system", strings.Join(opts.only, ","))
	}
	level := slog.LevelError
	if opts.verbose {
		level = slog.LevelWarn
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	progress := io.Writer(os.Stdout)
	if opts.json {
		progress = os.Stderr
	}

	rep := report{Config: reportConfig{Records: opts.records, DBOSRecords: opts.dbosRecords, Rounds: opts.rounds,
		Partitions: opts.partitions, Batch: opts.batch, WatermillBatch: opts.watermillBatch, DBOSWorkers: opts.dbosWorkers,
		DBOSSeparateDB: opts.dbosSeparateDB}, LoadAverageStart: loadAverage(), Started: time.Now().UTC()}
	fmt.Fprintf(progress, "%d records (DBOS %d), %d rounds; load average at start: %s\n",
		opts.records, opts.dbosRecords, opts.rounds, rep.LoadAverageStart)
	records := makeRecords(max(opts.records, opts.dbosRecords))
	for round := 1; round <= opts.rounds; round++ {
		for _, sys := range systems {
			n := opts.records
			if sys.dbos {
				n = opts.dbosRecords
			}
			rc := runConfig{dsn: dsn, schema: "peers_" + sys.slug, records: records[:n], partitions: sys.partitions,
				batch: opts.batch, watermillBatch: opts.watermillBatch, dbosWorkers: opts.dbosWorkers,
				dbosSeparateDB: opts.dbosSeparateDB, log: log}
			res, err := runOnce(ctx, admin, sys, rc)
			if err != nil {
				return fmt.Errorf("round %d: %s%s: %w", round, sys.name, partitionsNote(sys.partitions), err)
			}
			res.Round = round
			rep.Runs = append(rep.Runs, res)
			fmt.Fprintf(progress, "round %d: %s%s: %d records in %.2fs: %.0f records/s (%d rows, %d distinct ids: checked; input loaded in %.1fs, not timed)\n",
				round, sys.name, partitionsNote(sys.partitions), n, res.Seconds, res.RecordsPerSecond, n, n, res.PrepareSeconds)
		}
	}
	rep.LoadAverageEnd = loadAverage()
	rep.Finished = time.Now().UTC()
	rep.Summary = summarize(systems, rep.Runs)
	if opts.json {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return fmt.Errorf("writing the report: %w", err)
		}
		return nil
	}
	fmt.Print(rep.markdown())
	return nil
}

// parseFlags reads the command line.
func parseFlags(args []string) (options, error) {
	fs := flag.NewFlagSet("peers", flag.ContinueOnError)
	var o options
	var parts, only string
	fs.IntVar(&o.records, "records", 100_000, "records per run")
	fs.IntVar(&o.dbosRecords, "dbos-records", 0, "records per DBOS run (0: -records)")
	fs.IntVar(&o.rounds, "rounds", 3, "rounds; every system runs once per round, in turn")
	fs.StringVar(&parts, "partitions", "1,4", "partition counts of the hand-written loop and idem, comma-separated")
	fs.IntVar(&o.batch, "batch", 100, "batch size of the hand-written loop and idem")
	fs.IntVar(&o.watermillBatch, "watermill-batch", 1000, "watermill-sql's SubscribeBatchSize")
	fs.IntVar(&o.dbosWorkers, "dbos-workers", 16, "goroutines starting DBOS workflows, each waiting for its workflow's result")
	fs.BoolVar(&o.dbosSeparateDB, "dbos-separate-db", false, "keep DBOS's system tables in database "+dbosSeparateDatabase+
		" (created if absent) instead of a schema of the same database")
	fs.StringVar(&only, "only", "", "run only the systems whose name contains one of these comma-separated words (case-insensitive)")
	fs.BoolVar(&o.json, "json", false, "print the report as JSON on standard output (progress goes to standard error)")
	fs.BoolVar(&o.verbose, "v", false, "log the systems' warnings too, not only their errors")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	if o.dbosRecords == 0 {
		o.dbosRecords = o.records
	}
	for name, v := range map[string]int{"records": o.records, "dbos-records": o.dbosRecords, "rounds": o.rounds,
		"batch": o.batch, "watermill-batch": o.watermillBatch, "dbos-workers": o.dbosWorkers} {
		if v < 1 {
			return o, fmt.Errorf("-%s %d: want a positive number", name, v)
		}
	}
	for p := range strings.SplitSeq(parts, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(p))
		if err != nil || n < 1 || n > 1024 {
			return o, fmt.Errorf("-partitions %q: want partition counts from 1 to 1024, comma-separated", parts)
		}
		if !slices.Contains(o.partitions, n) {
			o.partitions = append(o.partitions, n)
		}
	}
	for w := range strings.SplitSeq(only, ",") {
		if w = strings.ToLower(strings.TrimSpace(w)); w != "" {
			o.only = append(o.only, w)
		}
	}
	return o, nil
}

// selectSystems lists the runs of one round, in order: the hand-written
// loop, watermill-sql, DBOS, then idem's scenarios, each at every partition
// count that applies.
func selectSystems(o options) []system {
	var all []system
	for _, p := range o.partitions {
		all = append(all, system{name: "hand-written", slug: "handwritten", partitions: p, prepare: prepareHandWritten})
	}
	all = append(all,
		system{name: "watermill-sql", slug: "watermill", prepare: prepareWatermill},
		system{name: "DBOS Transact", slug: "dbos", dbos: true, prepare: prepareDBOS})
	for _, sc := range []struct {
		name, slug string
		h          idemHandler
	}{
		{"idem RecordFunc + TxFrom", "idem_txfrom", recordTxFrom},
		{"idem RecordFunc + Defer", "idem_defer", recordDefer},
		{"idem HandlerFunc + BatchTx", "idem_batchtx", batchTx},
	} {
		for _, p := range o.partitions {
			all = append(all, system{name: sc.name, slug: sc.slug, partitions: p, prepare: prepareIdem(sc.h)})
		}
	}
	if len(o.only) == 0 {
		return all
	}
	return slices.DeleteFunc(all, func(s system) bool {
		name := strings.ToLower(s.name)
		return !slices.ContainsFunc(o.only, func(w string) bool { return strings.Contains(name, w) })
	})
}

// runOnce runs sys once on a fresh schema: prepares it (not timed), runs
// it (timed, from the start of consumption to the last row committed),
// closes it, checks the rows and drops the schema.
func runOnce(ctx context.Context, admin *pgxpool.Pool, sys system, rc runConfig) (runResult, error) {
	if err := resetSchema(ctx, admin, rc.schema); err != nil {
		return runResult{}, err
	}
	prepStart := time.Now()
	r, err := sys.prepare(ctx, rc)
	if err != nil {
		return runResult{}, fmt.Errorf("preparing: %w", err)
	}
	prepared := time.Since(prepStart)
	start := time.Now()
	err = r.Run(ctx)
	elapsed := time.Since(start)
	if cerr := r.Close(); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		return runResult{}, err
	}
	if err := checkRows(ctx, admin, rc.schema, len(rc.records)); err != nil {
		return runResult{}, err
	}
	if err := dropSchema(ctx, admin, rc.schema); err != nil {
		return runResult{}, err
	}
	return runResult{System: sys.name, Partitions: sys.partitions, Records: len(rc.records),
		PrepareSeconds: prepared.Seconds(), Seconds: elapsed.Seconds(), RecordsPerSecond: float64(len(rc.records)) / elapsed.Seconds()}, nil
}

// partitionsNote is ", N partition(s)" for a system with a partition count.
func partitionsNote(p int) string {
	if p == 0 {
		return ""
	}
	return fmt.Sprintf(", %d partition(s)", p)
}

// loadAverage returns /proc/loadavg's three load averages, or "unknown".
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}
