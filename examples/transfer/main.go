// Command transfer embeds idem and registers an in-process Go function,
// "transfer", that moves money between accounts in a PostgreSQL table
// through idem's own transaction, then notifies the outside world through a
// journaled step, and a second one, "ledger", that records each transfer
// in a ledger table with a deferred INSERT (postgres.Defer). It needs the
// PostgreSQL store (store: {postgres: …}).
//
// A record's data is a transfer:
//
//	{"from": "acc-3", "to": "acc-17", "amount": 42}
//
// Run it as idem itself, after creating and seeding the accounts:
//
//	go run ./examples/transfer setup -c examples/transfer/idem.yaml --accounts 100 --balance 1000000
//	IDEM_TRANSFER_LOG=notify.log go run ./examples/transfer serve -c examples/transfer/idem.yaml
//	go run ./cmd/idem put --stream transfers --partition-key acc-3 --data '{"from":"acc-3","to":"acc-17","amount":42}'
//
// `serve` creates the tables transfer_accounts (id text primary key,
// balance bigint) and transfer_ledger (record_key text primary key,
// from_account, to_account, amount) if they are missing, in the search path
// of the store's DSN; `setup` creates them too and inserts the accounts
// acc-0 … acc-N-1 that do not exist yet.
//
// A mapping of the stream to "ledger" (examples/transfer/idem.yaml has
// one) writes one ledger row per record, keyed by the record's idempotency
// key: the deferred INSERTs of a batch are sent as one INSERT of their
// rows, in idem's transaction, so the ledger too holds each transfer
// exactly once, and a second row for a record would fail on the primary
// key.
//
// # Guarantees
//
// The two UPDATEs of a transfer run in the transaction in which idem
// commits the record's completion and the checkpoint (postgres.TxFrom), so
// they are exactly-once: whatever crashes of idem or of PostgreSQL happen,
// and however often the record is delivered, every balance ends up moved by
// exactly the amounts of the transfers in the stream, and the sum of the
// balances never changes. A transfer that fails (a deadlock with another
// batch, a lost connection) has its writes rolled back to its
// savepoint and is delivered again.
//
// The notification is the journaled step "notify": it appends a line with
// the step's key ("<scope>/<record key>/notify": the scope is the function's
// name, transfer, unless the mapping sets one, and the record key is
// stream/shardId/sequence unless the mapping sets idempotency.key) to the
// file named by IDEM_TRANSFER_LOG (default transfer-notify.log), with
// O_APPEND and an fsync before it returns. It is not transactional, so it is at least once,
// not exactly once:
//
//   - once the step has completed (its result is journaled in the store,
//     which happens as soon as the step returns, not with the batch), it
//     never runs again for that record, even when the record's transaction
//     then rolls back and the record is delivered again;
//   - if idem dies, or the store cannot be reached, after the line was
//     written but before the step's completion was journaled, the step did
//     not complete: on the next delivery (once the lease of the interrupted
//     attempt, the function's timeout, has ended) it runs again with the same
//     key, and the file holds that key twice.
//
// So every transferred record's key is in the file at least once, and a key
// is there more than once only when an attempt was interrupted between its
// write and its journal entry: when idem is killed, at most one such attempt
// per invocation in flight (shards × parallelizationFactor); when
// PostgreSQL goes away, at most one per connection that fails to journal. A
// key whose step completed is never written again. A consumer of the file
// deduplicates by key, as any downstream of a journaled step should.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/cli"
	"github.com/idem-run/idem/config"
	"github.com/idem-run/idem/server"
	"github.com/idem-run/idem/store/postgres"
)

// Transfer is a record's data.
type Transfer struct {
	From   string `json:"from"`
	To     string `json:"to"`
	Amount int64  `json:"amount"`
}

// createTable creates the accounts and ledger tables if they are missing.
// The advisory lock keeps concurrent starts from racing on the catalog.
const createTable = `SELECT pg_advisory_xact_lock(7403112873);
CREATE TABLE IF NOT EXISTS transfer_accounts (id text PRIMARY KEY, balance bigint NOT NULL);
CREATE TABLE IF NOT EXISTS transfer_ledger (record_key text PRIMARY KEY, from_account text NOT NULL,
	to_account text NOT NULL, amount bigint NOT NULL)`

// ledger records the record's transfer in transfer_ledger, deferred: the
// INSERT is sent with the batch's others, as one statement, when the
// batch's records have run, and commits with the record.
func ledger(ctx context.Context, r *idem.Record) error {
	t, err := parseTransfer(r)
	if err != nil {
		return err
	}
	return postgres.Defer(ctx, `INSERT INTO transfer_ledger (record_key, from_account, to_account, amount) VALUES ($1, $2, $3, $4)`,
		r.IdempotencyKey, t.From, t.To, t.Amount)
}

// parseTransfer decodes and checks the record's transfer.
func parseTransfer(r *idem.Record) (Transfer, error) {
	var t Transfer
	if err := json.Unmarshal(r.Data, &t); err != nil {
		return t, idem.Permanent(fmt.Errorf("transfer %s: %w", r.IdempotencyKey, err))
	}
	if t.From == "" || t.To == "" || t.Amount <= 0 {
		return t, idem.Permanent(fmt.Errorf("transfer %s: needs from, to and a positive amount: %s", r.IdempotencyKey, r.Data))
	}
	return t, nil
}

// transfer moves the record's amount from one account to the other in
// idem's transaction, then appends the notification through the journaled
// step "notify".
func transfer(ctx context.Context, r *idem.Record) error {
	t, err := parseTransfer(r)
	if err != nil {
		return err
	}
	tx, err := postgres.TxFrom(ctx)
	if err != nil {
		return err
	}
	// Lock the two rows in one order, so that two transfers between the
	// same accounts cannot deadlock each other (transfers of different
	// batches still can: PostgreSQL then fails one, and it is retried).
	updates := []struct {
		id    string
		delta int64
	}{{t.From, -t.Amount}, {t.To, t.Amount}}
	if t.To < t.From {
		updates[0], updates[1] = updates[1], updates[0]
	}
	for _, u := range updates {
		tag, err := tx.Exec(ctx, `UPDATE transfer_accounts SET balance = balance + $1 WHERE id = $2`, u.delta, u.id)
		if err != nil {
			return err
		}
		if tag.RowsAffected() != 1 {
			return idem.Permanent(fmt.Errorf("transfer %s: no account %q", r.IdempotencyKey, u.id))
		}
	}
	_, err = idem.Step(ctx, "notify", func(ctx context.Context, key string) (struct{}, error) {
		return struct{}{}, notifications.append(key)
	})
	return err
}

// notifyLog is the file the step "notify" appends to.
type notifyLog struct {
	mu   sync.Mutex
	f    *os.File
	path string
}

var notifications = &notifyLog{}

// append writes key and a newline at the end of the file and syncs it.
func (l *notifyLog) append(key string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		l.path = os.Getenv("IDEM_TRANSFER_LOG")
		if l.path == "" {
			l.path = "transfer-notify.log"
		}
		f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
		if err != nil {
			return fmt.Errorf("notify: %w", err)
		}
		l.f = f
	}
	if _, err := l.f.WriteString(key + "\n"); err != nil {
		return fmt.Errorf("notify: writing %s: %w", l.path, err)
	}
	if err := l.f.Sync(); err != nil {
		return fmt.Errorf("notify: syncing %s: %w", l.path, err)
	}
	return nil
}

// configPath returns the value of serve's -c/--config in args, or "".
func configPath(args []string) string {
	for i, a := range args {
		for _, f := range []string{"-c", "--config"} {
			switch {
			case a == f && i+1 < len(args):
				return args[i+1]
			case strings.HasPrefix(a, f+"="):
				return strings.TrimPrefix(a, f+"=")
			}
		}
		if strings.HasPrefix(a, "-c") && len(a) > 2 && !strings.HasPrefix(a, "--") {
			return a[2:]
		}
	}
	return ""
}

// connect loads the configuration at path and connects to its PostgreSQL
// store's database.
func connect(ctx context.Context, path string) (*pgx.Conn, error) {
	cfg, err := config.Load(path)
	if err != nil {
		return nil, err
	}
	if cfg.Store.Postgres == nil {
		return nil, errors.New("transfer writes through idem's PostgreSQL transaction: the configuration needs store: {postgres: {dsn: …}}")
	}
	// pgxpool's parser accepts the pool settings (pool_max_conns …) the
	// store's DSN may hold, which pgx.ParseConfig would send as run-time
	// parameters.
	pcfg, err := pgxpool.ParseConfig(cfg.Store.Postgres.DSN)
	if err != nil {
		return nil, fmt.Errorf("store.postgres.dsn: %w", err)
	}
	return pgx.ConnectConfig(ctx, pcfg.ConnConfig)
}

// ensureTable creates the accounts table, for serve.
func ensureTable(path string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := connect(ctx, path)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	return pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, createTable)
		return err
	})
}

// setup is `transfer setup -c FILE --accounts N --balance B`: it creates the
// table and the accounts acc-0 … acc-N-1 that are missing, each with
// balance B.
func setup(args []string) error {
	fs := flag.NewFlagSet("setup", flag.ContinueOnError)
	path := fs.String("c", "", "config file (YAML) whose store.postgres names the database")
	accounts := fs.Int("accounts", 100, "number of accounts")
	balance := fs.Int64("balance", 1000000, "opening balance of each account")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *path == "" {
		return errors.New("setup: -c FILE is required")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := connect(ctx, *path)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	return pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, createTable); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO transfer_accounts (id, balance)
SELECT 'acc-' || i, $2 FROM generate_series(0, $1 - 1) AS i
ON CONFLICT (id) DO NOTHING`, *accounts, *balance)
		return err
	})
}

func main() {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "setup":
			if err := setup(os.Args[2:]); err != nil {
				fmt.Fprintln(os.Stderr, "transfer:", err)
				os.Exit(1)
			}
			return
		case "serve":
			if path := configPath(os.Args[2:]); path != "" {
				if err := ensureTable(path); err != nil {
					fmt.Fprintln(os.Stderr, "transfer:", err)
					os.Exit(1)
				}
			}
		}
	}
	cli.Main(server.WithHandler("transfer", idem.RecordFunc(transfer)), server.WithHandler("ledger", idem.RecordFunc(ledger)))
}
