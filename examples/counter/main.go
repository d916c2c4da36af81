// Command counter embeds idem and registers an in-process Go function,
// "counter", that counts records per partition key in idem's state. Because
// state commits with the checkpoint, every count is exact, whatever crashes
// or replays happen. Run it as idem itself:
//
//	go run ./examples/counter serve -c examples/counter/idem.yaml
//	go run ./cmd/idem put --stream events --partition-key alice --data hello
//	go run ./cmd/idem state --scope counter --key count/alice
package main

import (
	"context"
	"errors"
	"strconv"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/cli"
	"github.com/idem-run/idem/server"
)

// count adds one to the record's own counter and to its key's counter.
func count(ctx context.Context, r *idem.Record) error {
	st := idem.StateFrom(ctx)
	for _, key := range []string{"record/" + r.IdempotencyKey, "count/" + r.PartitionKey} {
		if err := increment(ctx, st, key); err != nil {
			return err
		}
	}
	return nil
}

func increment(ctx context.Context, st idem.State, key string) error {
	n := 0
	v, err := st.Get(ctx, key)
	switch {
	case errors.Is(err, idem.ErrNotFound):
	case err != nil:
		return err
	default:
		if n, err = strconv.Atoi(string(v)); err != nil {
			return idem.Permanent(err)
		}
	}
	return st.Put(ctx, key, []byte(strconv.Itoa(n+1)))
}

func main() {
	cli.Main(server.WithHandler("counter", idem.RecordFunc(count)))
}
