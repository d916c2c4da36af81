package main

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// handWritten is the loop a user writes without any framework: per
// partition one goroutine reads batch records, and one transaction INSERTs
// them in one multi-row statement and upserts the partition's offset row.
// The offset commits with the rows, so a restart resumes after the last
// committed batch and no row is written twice.
type handWritten struct {
	pool    *pgxpool.Pool
	parts   [][]record
	batch   int
	effects string
	offsets string
}

// prepareHandWritten splits the records into rc.partitions in-memory
// partitions by a hash of their id and creates the offsets table.
func prepareHandWritten(ctx context.Context, rc runConfig) (runner, error) {
	pool, err := newPool(ctx, rc.dsn, rc.partitions)
	if err != nil {
		return nil, err
	}
	h := &handWritten{pool: pool, parts: make([][]record, rc.partitions), batch: rc.batch,
		effects: effectsTable(rc.schema), offsets: pgx.Identifier{rc.schema, "offsets"}.Sanitize()}
	for _, r := range rc.records {
		p := partitionOf(r.ID, rc.partitions)
		h.parts[p] = append(h.parts[p], r)
	}
	if _, err := pool.Exec(ctx, "CREATE TABLE "+h.offsets+" (part int PRIMARY KEY, next bigint NOT NULL)"); err != nil {
		pool.Close()
		return nil, fmt.Errorf("creating the offsets table: %w", err)
	}
	if err := warm(ctx, pool, rc.partitions); err != nil {
		pool.Close()
		return nil, err
	}
	return h, nil
}

// Run runs every partition's loop to its end.
func (h *handWritten) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	errs := make([]error, len(h.parts))
	for p := range h.parts {
		wg.Go(func() { errs[p] = h.partition(ctx, p) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// partition is one partition's loop: from the committed offset, read a
// batch, commit its rows with the new offset, repeat.
func (h *handWritten) partition(ctx context.Context, p int) error {
	var next int64
	err := h.pool.QueryRow(ctx, "SELECT next FROM "+h.offsets+" WHERE part = $1", p).Scan(&next)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("partition %d: reading its offset: %w", p, err)
	}
	recs := h.parts[p]
	ids := make([]string, 0, h.batch)
	bodies := make([][]byte, 0, h.batch)
	for int(next) < len(recs) {
		end := min(int(next)+h.batch, len(recs))
		ids, bodies = ids[:0], bodies[:0]
		for _, r := range recs[next:end] { // the read of a batch
			ids = append(ids, r.ID)
			bodies = append(bodies, r.Data)
		}
		err := pgx.BeginFunc(ctx, h.pool, func(tx pgx.Tx) error {
			b := &pgx.Batch{}
			b.Queue("INSERT INTO "+h.effects+" (id, body) SELECT * FROM unnest($1::text[], $2::bytea[])", ids, bodies)
			b.Queue("INSERT INTO "+h.offsets+" (part, next) VALUES ($1, $2) ON CONFLICT (part) DO UPDATE SET next = excluded.next", p, end)
			return tx.SendBatch(ctx, b).Close()
		})
		if err != nil {
			return fmt.Errorf("partition %d: committing records %d to %d: %w", p, next, end, err)
		}
		next = int64(end)
	}
	return nil
}

// Close closes the pool.
func (h *handWritten) Close() error {
	h.pool.Close()
	return nil
}
