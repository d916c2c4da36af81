package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/dbos-inc/dbos-transact-golang/dbos"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// dbosSystemSchema is the schema of DBOS's system tables (workflow_status,
// operation_outputs, ...), dropped and created again for every run.
const dbosSystemSchema = "peers_dbos_system"

// dbosSeparateDatabase is the database of DBOS's system tables with
// -dbos-separate-db, created if absent.
const dbosSeparateDatabase = "dbos_peers"

// dbosRun is DBOS Transact's exactly-once processing: one workflow per
// record, started with the record's id as its workflow ID (a second start
// of the same ID returns the first's handle instead of running it again),
// whose one step is a transaction (RunAsTransaction) that INSERTs the row.
// DBOS commits the step's output checkpoint in the same transaction as the
// INSERT (or, with the system database elsewhere, a completion row in the
// application database's transaction), so a recovered workflow never runs
// the INSERT twice.
type dbosRun struct {
	ctx     dbos.Context
	app     *pgxpool.Pool // the effects table's database
	sys     *pgxpool.Pool // DBOS's system database: app itself unless separate
	records []record
	workers int
	wf      dbos.Workflow[record, int64]
}

// prepareDBOS creates a fresh system schema, registers the workflow and
// launches DBOS. None of it is timed.
func prepareDBOS(ctx context.Context, rc runConfig) (runner, error) {
	conns := rc.dbosWorkers + 8
	app, err := newPool(ctx, rc.dsn, conns)
	if err != nil {
		return nil, err
	}
	d := &dbosRun{app: app, sys: app, records: rc.records, workers: rc.dbosWorkers}
	if err := d.prepare(ctx, rc, conns); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

func (d *dbosRun) prepare(ctx context.Context, rc runConfig, conns int) error {
	if rc.dbosSeparateDB {
		sys, err := separateDatabase(ctx, d.app, rc.dsn, conns)
		if err != nil {
			return err
		}
		d.sys = sys
	}
	if err := dropSchema(ctx, d.sys, dbosSystemSchema); err != nil {
		return fmt.Errorf("dbos: %w", err)
	}
	dctx, err := dbos.NewContext(ctx, dbos.Config{AppName: "idem-peers", SystemDBPool: d.sys,
		DatabaseSchema: dbosSystemSchema, Logger: rc.log})
	if err != nil {
		return fmt.Errorf("dbos: creating the context: %w", err)
	}
	d.ctx = dctx
	// With the system database in the same pool, RunAsTransaction runs the
	// INSERT and the step's checkpoint in one transaction; otherwise it
	// writes a completion row in the application database's transaction
	// (kept in the run's schema) and then checkpoints in the system one.
	ds, err := dbos.NewDataSource(dctx, d.app, dbos.WithDataSourceName("peers"), dbos.WithDataSourceSchema(rc.schema))
	if err != nil {
		return fmt.Errorf("dbos: creating the data source: %w", err)
	}
	// Make sure the mode is the one intended: DBOS creates the completion
	// table only for a data source apart from the system database.
	var completion *string
	if err := d.app.QueryRow(ctx, "SELECT to_regclass($1)::text", pgx.Identifier{rc.schema, "transaction_completion"}.Sanitize()).Scan(&completion); err != nil {
		return fmt.Errorf("dbos: looking for the completion table: %w", err)
	}
	if (completion != nil) != rc.dbosSeparateDB {
		return fmt.Errorf("dbos: completion table %v with -dbos-separate-db=%t: the data source is not in the mode intended", completion, rc.dbosSeparateDB)
	}
	q := "INSERT INTO " + effectsTable(rc.schema) + " (id, body) VALUES ($1, $2)"
	d.wf = func(ctx dbos.Context, r record) (int64, error) {
		return dbos.RunAsTransaction(ctx, ds, func(ctx context.Context, tx dbos.Tx) (int64, error) {
			res, err := tx.Exec(ctx, q, r.ID, r.Data)
			if err != nil {
				return 0, fmt.Errorf("inserting %s: %w", r.ID, err)
			}
			return res.RowsAffected()
		}, dbos.WithStepName("insert"))
	}
	dbos.RegisterWorkflow(dctx, d.wf)
	if err := dbos.Launch(dctx); err != nil {
		return fmt.Errorf("dbos: launching: %w", err)
	}
	if err := warm(ctx, d.app, min(conns, d.workers+1)); err != nil {
		return fmt.Errorf("dbos: %w", err)
	}
	return nil
}

// separateDatabase creates DBOS's own database if absent and opens a pool
// over it.
func separateDatabase(ctx context.Context, app *pgxpool.Pool, dsn string, conns int) (*pgxpool.Pool, error) {
	var exists bool
	if err := app.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", dbosSeparateDatabase).Scan(&exists); err != nil {
		return nil, fmt.Errorf("dbos: looking for database %s: %w", dbosSeparateDatabase, err)
	}
	if !exists {
		if _, err := app.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{dbosSeparateDatabase}.Sanitize()); err != nil {
			return nil, fmt.Errorf("dbos: creating database %s: %w", dbosSeparateDatabase, err)
		}
	}
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("dbos: parsing the PostgreSQL URL: %w", err)
	}
	cfg.ConnConfig.Database = dbosSeparateDatabase
	cfg.MaxConns = int32(conns)
	sys, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("dbos: opening database %s: %w", dbosSeparateDatabase, err)
	}
	return sys, nil
}

// Run starts one workflow per record from d.workers goroutines, each
// waiting for its workflow's result before starting the next, and returns
// once every workflow has finished.
func (d *dbosRun) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	next := make(chan record)
	errs := make([]error, d.workers)
	var wg sync.WaitGroup
	for w := range d.workers {
		wg.Go(func() {
			for r := range next {
				if err := d.one(r); err != nil {
					errs[w] = err
					cancel()
					return
				}
			}
		})
	}
feed:
	for _, r := range d.records {
		select {
		case next <- r:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return ctx.Err()
}

// one runs r's workflow to its end.
func (d *dbosRun) one(r record) error {
	h, err := dbos.RunWorkflow(d.ctx, d.wf, r, dbos.WithWorkflowID(r.ID))
	if err != nil {
		return fmt.Errorf("dbos: starting workflow %s: %w", r.ID, err)
	}
	n, err := h.GetResult()
	if err != nil {
		return fmt.Errorf("dbos: workflow %s: %w", r.ID, err)
	}
	if n != 1 {
		return fmt.Errorf("dbos: workflow %s inserted %d rows, want 1", r.ID, n)
	}
	return nil
}

// Close shuts DBOS down, drops its system schema and closes the pools.
func (d *dbosRun) Close() error {
	var errs []error
	if d.ctx != nil {
		if err := dbos.Shutdown(d.ctx, 10*time.Second); err != nil {
			errs = append(errs, fmt.Errorf("dbos: shutting down: %w", err))
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := dropSchema(ctx, d.sys, dbosSystemSchema); err != nil {
			errs = append(errs, fmt.Errorf("dbos: %w", err))
		}
	}
	if d.sys != d.app {
		d.sys.Close()
	}
	d.app.Close()
	return errors.Join(errs...)
}
