package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/config"
	"github.com/idem-run/idem/server"
	"github.com/idem-run/idem/store/postgres"
)

// idemStream, idemFunction and idemMapping name the run's embedded stream,
// Go function and mapping.
const (
	idemStream   = "records"
	idemFunction = "insert"
	idemMapping  = "records-insert"
)

// idemPutChunk is how many records one POST to the stream appends.
const idemPutChunk = 500

// idemHandler makes the Go function of an idem scenario: h is registered
// under idemFunction; done is called with the number of records each call
// handled.
type idemHandler func(table string, done func(int)) idem.Handler

// recordTxFrom is "RecordFunc + TxFrom": a record function that runs its
// INSERT in the record's transaction and waits for it.
func recordTxFrom(table string, done func(int)) idem.Handler {
	q := "INSERT INTO " + table + " (id, body) VALUES ($1, $2)"
	return idem.RecordFunc(func(ctx context.Context, r *idem.Record) error {
		id, err := idOf(r.Data)
		if err != nil {
			return idem.Permanent(err)
		}
		tx, err := postgres.TxFrom(ctx)
		if err != nil {
			return fmt.Errorf("idem: the record's transaction: %w", err)
		}
		if _, err := tx.Exec(ctx, q, id, r.Data); err != nil {
			return fmt.Errorf("idem: inserting %s: %w", id, err)
		}
		done(1)
		return nil
	})
}

// recordDefer is "RecordFunc + Defer": the same INSERT deferred, sent with
// the batch's other records' in one round trip.
func recordDefer(table string, done func(int)) idem.Handler {
	q := "INSERT INTO " + table + " (id, body) VALUES ($1, $2)"
	return idem.RecordFunc(func(ctx context.Context, r *idem.Record) error {
		id, err := idOf(r.Data)
		if err != nil {
			return idem.Permanent(err)
		}
		if err := postgres.Defer(ctx, q, id, r.Data); err != nil {
			return fmt.Errorf("idem: deferring the insert of %s: %w", id, err)
		}
		done(1)
		return nil
	})
}

// batchTx is "HandlerFunc + BatchTx": a batch handler that INSERTs the
// whole batch in one statement in the batch's transaction.
func batchTx(table string, done func(int)) idem.Handler {
	q := "INSERT INTO " + table + " (id, body) SELECT * FROM unnest($1::text[], $2::bytea[])"
	return idem.HandlerFunc(func(ctx context.Context, b *idem.Batch) (idem.BatchResult, error) {
		tx, err := postgres.BatchTx(ctx, b)
		if err != nil {
			return idem.BatchResult{}, fmt.Errorf("idem: the batch's transaction: %w", err)
		}
		ids := make([]string, len(b.Records))
		bodies := make([][]byte, len(b.Records))
		for i := range b.Records {
			if ids[i], err = idOf(b.Records[i].Data); err != nil {
				return idem.BatchResult{}, err
			}
			bodies[i] = b.Records[i].Data
		}
		if _, err := tx.Exec(ctx, q, ids, bodies); err != nil {
			return idem.BatchResult{}, fmt.Errorf("idem: inserting the batch: %w", err)
		}
		done(len(b.Records))
		return idem.BatchResult{}, nil
	})
}

// idemRun is idem embedded through its public server package: an embedded
// stream (Pebble, in a temporary data directory) with one shard per
// partition, the PostgreSQL store in the run's schema, and a mapping of
// batch size 100 to an in-process Go function. The records' rows commit
// with their completion marks and the shard's checkpoint in one
// transaction of the store.
type idemRun struct {
	dir     string
	addr    string
	n       int
	srv     *server.Server
	handled atomic.Int64
	all     chan struct{} // closed once n records were handled
	once    sync.Once
	stop    context.CancelFunc
	done    chan error // Run's result
}

// prepareIdem returns the preparation of one idem scenario: it appends the
// records to the embedded stream through a first server that runs no
// mapping, then creates (without running) the server that runs the mapping
// over the same data directory. None of it is timed.
func prepareIdem(h idemHandler) func(ctx context.Context, rc runConfig) (runner, error) {
	return func(ctx context.Context, rc runConfig) (runner, error) {
		dir, err := os.MkdirTemp("", "idem-peers-")
		if err != nil {
			return nil, fmt.Errorf("idem: creating the data directory: %w", err)
		}
		r := &idemRun{dir: dir, n: len(rc.records), all: make(chan struct{})}
		if err := r.prepare(ctx, rc, h); err != nil {
			r.Close()
			return nil, err
		}
		return r, nil
	}
}

// idemConfig is the configuration of both servers: the second adds the
// function and the mapping.
func (r *idemRun) config(rc runConfig, mapping bool) (*config.File, error) {
	yaml := fmt.Sprintf("streams:\n  - {name: %s, shards: %d}\n", idemStream, rc.partitions)
	if mapping {
		yaml += fmt.Sprintf(`functions:
  - {name: %s, timeout: 60s}
mappings:
  - name: %s
    source: {stream: %s}
    function: %s
    startingPosition: TRIM_HORIZON
    batchSize: %d
`, idemFunction, idemMapping, idemStream, idemFunction, rc.batch)
	}
	cfg, err := config.ParseWithEnv([]byte(yaml), nil)
	if err != nil {
		return nil, fmt.Errorf("idem: the configuration: %w", err)
	}
	cfg.DataDir = r.dir
	cfg.Listen = r.addr
	cfg.Store.Postgres = &config.PostgresStore{DSN: rc.dsn, Schema: rc.schema}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("idem: the configuration: %w", err)
	}
	return cfg, nil
}

func (r *idemRun) prepare(ctx context.Context, rc runConfig, h idemHandler) error {
	addr, err := freeAddr()
	if err != nil {
		return err
	}
	r.addr = addr
	if err := r.load(ctx, rc); err != nil {
		return err
	}
	cfg, err := r.config(rc, true)
	if err != nil {
		return err
	}
	handler := h(effectsTable(rc.schema), func(k int) {
		if r.handled.Add(int64(k)) >= int64(r.n) {
			r.once.Do(func() { close(r.all) })
		}
	})
	r.srv, err = server.New(cfg, server.WithHandler(idemFunction, handler), server.WithLogger(rc.log))
	if err != nil {
		return fmt.Errorf("idem: creating the server: %w", err)
	}
	return nil
}

// load appends the records to the stream, partition key = id, through a
// server that runs no mapping.
func (r *idemRun) load(ctx context.Context, rc runConfig) error {
	cfg, err := r.config(rc, false)
	if err != nil {
		return err
	}
	srv, err := server.New(cfg, server.WithLogger(rc.log))
	if err != nil {
		return fmt.Errorf("idem: creating the loading server: %w", err)
	}
	defer srv.Close()
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- srv.Run(runCtx) }()
	err = r.put(ctx, rc.records)
	stop()
	if rerr := <-done; rerr != nil && err == nil {
		err = fmt.Errorf("idem: the loading server: %w", rerr)
	}
	return err
}

// put POSTs records to the stream, idemPutChunk a request.
func (r *idemRun) put(ctx context.Context, records []record) error {
	if err := r.waitHealthy(ctx); err != nil {
		return err
	}
	url := "http://" + r.addr + "/v1/streams/" + idemStream + "/records"
	for i := 0; i < len(records); i += idemPutChunk {
		var req server.PutRequest
		for _, rec := range records[i:min(i+idemPutChunk, len(records))] {
			req.Records = append(req.Records, server.PutRecord{PartitionKey: rec.ID, Data: string(rec.Data)})
		}
		body, err := json.Marshal(req)
		if err != nil {
			return fmt.Errorf("idem: encoding records: %w", err)
		}
		if err := post(ctx, url, body); err != nil {
			return fmt.Errorf("idem: appending records %d on: %w", i, err)
		}
	}
	return nil
}

// post sends body to url and fails unless the answer is 200.
func post(ctx context.Context, url string, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("building the request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("sending the request: %w", err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", resp.Status, bytes.TrimSpace(msg))
	}
	return nil
}

// waitHealthy waits until the server at r.addr answers /healthz.
func (r *idemRun) waitHealthy(ctx context.Context) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+r.addr+"/healthz", nil)
		if err != nil {
			return fmt.Errorf("idem: building the health check: %w", err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("idem: the server at %s did not come up: %w", r.addr, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Run starts the server and returns once every record is processed,
// i.e. committed: first it waits until the function has handled every
// record, then it polls the server's status until the shards' processed
// counts, which advance with the store's commits, add up to n.
func (r *idemRun) Run(ctx context.Context) error {
	runCtx, stop := context.WithCancel(ctx)
	r.stop = stop
	r.done = make(chan error, 1)
	go func() { r.done <- r.srv.Run(runCtx) }()
	select {
	case <-r.all:
	case err := <-r.done:
		r.done <- err
		if err == nil {
			err = errors.New("no error")
		}
		return fmt.Errorf("idem: the server stopped early: %w", err)
	case <-ctx.Done():
		return ctx.Err()
	}
	for {
		processed, err := r.processed(ctx)
		if err != nil {
			return err
		}
		if processed >= uint64(r.n) {
			return nil
		}
		time.Sleep(time.Millisecond)
	}
}

// processed adds up the mapping's shards' processed counts, failing if a
// shard reports an error.
func (r *idemRun) processed(ctx context.Context) (uint64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+r.addr+"/v1/status", nil)
	if err != nil {
		return 0, fmt.Errorf("idem: building the status request: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, fmt.Errorf("idem: reading the status: %w", err)
	}
	defer resp.Body.Close()
	var st server.StatusResponse
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return 0, fmt.Errorf("idem: decoding the status: %w", err)
	}
	var n uint64
	for _, s := range st.Shards {
		if s.LastError != "" {
			return 0, fmt.Errorf("idem: shard %s: %s", s.Shard, s.LastError)
		}
		n += s.Processed
	}
	return n, nil
}

// Close stops and closes the server and removes the data directory.
func (r *idemRun) Close() error {
	var errs []error
	if r.stop != nil {
		r.stop()
		if err := <-r.done; err != nil {
			errs = append(errs, fmt.Errorf("idem: the server: %w", err))
		}
	}
	if r.srv != nil {
		if err := r.srv.Close(); err != nil {
			errs = append(errs, fmt.Errorf("idem: closing the server: %w", err))
		}
	}
	if err := os.RemoveAll(r.dir); err != nil {
		errs = append(errs, fmt.Errorf("idem: removing the data directory: %w", err))
	}
	return errors.Join(errs...)
}

// freeAddr returns a loopback address with a port free at the time of the
// call, for the server's HTTP API.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("idem: finding a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}
