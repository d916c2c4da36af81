package main

import (
	"context"
	"log/slog"
)

// runConfig is what a system's prepare step gets for one run.
type runConfig struct {
	// dsn is the PostgreSQL URL every system writes to.
	dsn string
	// schema is the run's fresh schema, holding the effects table; the
	// system may keep its own tables there too.
	schema string
	// records are the run's input.
	records []record
	// partitions is the partition (shard) count; 0 for systems without one.
	partitions int
	// batch is the hand-written loop's and idem's batch size.
	batch int
	// watermillBatch is watermill-sql's SubscribeBatchSize.
	watermillBatch int
	// dbosWorkers is the number of goroutines starting DBOS workflows.
	dbosWorkers int
	// dbosSeparateDB puts DBOS's system database in a database of its own.
	dbosSeparateDB bool
	// log is where the systems' own logs go (errors only by default).
	log *slog.Logger
}

// runner is one prepared run: its input loaded, its tables created. Run is
// timed; Close is not.
type runner interface {
	// Run consumes every record and returns once every row is committed.
	Run(ctx context.Context) error
	// Close releases what the run opened.
	Close() error
}

// system is one of the compared systems at one partition count.
type system struct {
	// name is the system's name as the table prints it.
	name string
	// slug names the system's schema: peers_<slug>.
	slug string
	// partitions is the partition count; 0 for systems without one.
	partitions int
	// dbos marks the DBOS system, which may run on fewer records.
	dbos bool
	// prepare loads the input and returns the run, before the clock starts.
	prepare func(ctx context.Context, rc runConfig) (runner, error)
}
