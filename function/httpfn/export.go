package httpfn

import "github.com/idem-run/idem"

// AppendKinesisEvent appends b to dst as the KinesisEvent JSON that Invoke
// POSTs (each record with its "idempotencyKey"), with region in awsRegion
// and in the stream ARNs. Other drivers that hand a batch to Lambda code
// (function/process) build their events with it, so that a function
// receives byte-identical events whichever way idem reaches it.
func AppendKinesisEvent(dst []byte, region string, b *idem.Batch) []byte {
	f := Function{region: region}
	return f.appendEvent(dst, b)
}
