// Command peers compares idem with its peers at one job (issue 14, goal 4):
// N records (100,000 by default), each of which must INSERT one row into
// PostgreSQL exactly once, committed together with the system's own record
// of what is done. Every system writes into a fresh table with a PRIMARY KEY
// on the record's id, in a schema of its own (peers_<system>), dropped and
// created again for every run.
//
// It is a module of its own (bench/peers/go.mod, with a replace of idem to
// ../..), so idem's go.mod gains none of the peers' dependencies.
//
// # The systems
//
//   - hand-written: the loop a user writes without a framework. Per
//     partition (-partitions, 1 and 4) one goroutine reads 100 records from
//     its in-memory partition (records are split by a hash of their id) and
//     commits one transaction holding one multi-row INSERT (pgx, unnest of
//     the batch's ids and bodies) and an upsert of the partition's offset
//     row. Exactly-once: the offset commits with the rows, so a restart
//     resumes after the last committed batch.
//   - watermill-sql (v4.1.2, watermill v1.5.1): the records are published
//     beforehand to a SQL topic (a PostgreSQL table, BYTEA payload). One
//     subscriber of consumer group "peers", SubscribeBatchSize 1000, reads
//     them; watermill hands each message the subscriber's own transaction
//     (sql.TxFromContext), in which the handler INSERTs the message's row;
//     the subscriber then upserts the consumer group's offset in the same
//     transaction and commits. Exactly-once: the rows of a batch commit
//     with the offset that covers them, under the offset row's lock.
//   - DBOS Transact (v1.9.0): one workflow per record, its workflow ID the
//     record's id, whose one step is a transaction (dbos.RunAsTransaction on
//     a data source) that INSERTs the row. 16 goroutines (-dbos-workers)
//     each start a workflow with dbos.RunWorkflow and wait for its result
//     before starting the next; no DBOS queue. The system tables live in
//     schema peers_dbos_system of the same database, through the same pool
//     as the data source, so DBOS runs the INSERT and the step's checkpoint
//     in one transaction (with -dbos-separate-db they live in database
//     dbos_peers, created if absent, and DBOS commits a completion row with
//     the INSERT in the application database, then checkpoints the step in
//     the system database). Exactly-once: the step's checkpoint (or
//     completion row) commits with the INSERT, so a recovered workflow
//     replays the step instead of running it; a second start of the same
//     workflow ID returns the first one's handle.
//   - idem, through its public packages only (server, config, store/postgres,
//     the top-level idem package): an embedded stream with one shard per
//     partition (1 and 4), the PostgreSQL store in the run's schema, and a
//     mapping of batch size 100 to an in-process Go function, in three
//     scenarios: "RecordFunc + TxFrom" (one INSERT per record in the record's
//     transaction, waiting for it), "RecordFunc + Defer" (the same INSERT
//     deferred with postgres.Defer, the batch's sent in one round trip) and
//     "HandlerFunc + BatchTx" (a batch handler INSERTing the batch in one
//     statement in the batch's transaction). Exactly-once: the rows commit
//     in the store's transaction with the records' completion marks and the
//     shard's checkpoint.
//
// An embedded stream can be opened only by the server package from another
// module (source/embedded takes a database handle of an internal package),
// so each idem run uses two servers over one temporary data directory: the
// first, with the stream and no mapping, takes the records through the HTTP
// API (POST /v1/streams/{stream}/records); the second runs the mapping.
//
// # What is timed
//
// Loading the input is done before the clock starts, for every system, and
// not timed: splitting the records into partitions (hand-written),
// publishing them to the topic (watermill-sql), launching DBOS and creating
// its system tables, appending them to the embedded stream and creating the
// server (idem). The clock runs from the start of consumption until every row
// is committed:
//
//   - hand-written: until every partition's loop has committed its last
//     batch;
//   - watermill-sql: until the handler has acked the last message and the
//     consumer group's committed offset (polled every millisecond) is the
//     last message's;
//   - DBOS: until every workflow's result has been returned;
//   - idem: until the function has handled every record and the shards'
//     processed counts (GET /v1/status, polled every millisecond), which
//     advance with the store's commits, add up to N.
//
// # What is checked
//
// After every run the effects table must hold N rows with N distinct ids
// (count(*) and count(DISTINCT id)); otherwise the command exits non-zero,
// naming the system, its partition count and the round.
//
// # Running it
//
//	cd bench/peers && go run . [-records N] [-rounds R] [-partitions 1,4] [-only name,...] [-json]
//
// PostgreSQL is IDEM_PEERS_PG, by default
// postgres://postgres@127.0.0.1:5432/test?sslmode=disable. Systems run in
// interleaved rounds (every system once per round, in turn). The command
// prints one line per run, then a Markdown table: records/s min, median and
// max over the rounds, and the median's ratio to the hand-written loop's at
// the same partition count (watermill-sql and DBOS have none: they are
// compared with the hand-written loop with 1 partition). -json prints a
// machine-readable report instead. -dbos-records runs DBOS on fewer
// records than the others. The figures belong in the repository's
// BENCHMARKS.md, with the machine, the date and the load average the
// command prints.
package main
