// Command batch embeds idem with a batch handler that reports partial
// failures the way Lambda functions do, with batchItemFailures: records
// whose data is not a number fail, the checkpoint moves to just before the
// first of them, and idem retries from there.
package main

import (
	"context"
	"log/slog"
	"strconv"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/cli"
	"github.com/idem-run/idem/server"
)

func handle(_ context.Context, b *idem.Batch) (idem.BatchResult, error) {
	var res idem.BatchResult
	for i := range b.Records {
		r := &b.Records[i]
		n, err := strconv.Atoi(string(r.Data))
		if err != nil {
			res.BatchItemFailures = append(res.BatchItemFailures, idem.BatchItemFailure{ItemIdentifier: r.EventID()})
			continue
		}
		slog.Info("sum", "key", r.PartitionKey, "value", n)
	}
	return res, nil
}

func main() {
	cli.Main(server.WithHandler("numbers", idem.HandlerFunc(handle)))
}
