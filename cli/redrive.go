package cli

import (
	"encoding/json"
	"fmt"
	"net/http"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/idem-run/idem/server"
)

// redriveCmd is `idem redrive`: it asks the server to send what an
// on-failure stream holds back through its mapping or function, so that
// records discarded while a function was broken run once it is fixed.
func redriveCmd() *cobra.Command {
	var addr string
	var req server.RedriveRequest
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "redrive --from STREAM (--mapping M | --function F) [--dry-run] [--new-keys] [--json]",
		Short: "Send the records of an on-failure stream back through their mapping, or asynchronous events back to their function",
		Long: `Send the records a mapping discarded to its on-failure stream back to the
mapping's source stream, or the asynchronous events a function gave up back
to its queue. Records run under their original idempotency key (those whose
key completed are skipped) unless --new-keys is given. Progress commits as
records are sent: running the redrive again, or after a crash, sends each
record once. --dry-run prints what would be sent and sends nothing.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if (req.Mapping == "") == (req.Function == "") {
				return usageError{fmt.Errorf("name exactly one of --mapping and --function")}
			}
			c := newClient(addr)
			// A redrive answers once it has sent everything.
			c.http.Timeout = 0
			var out server.RedriveResponse
			if err := c.do(cmd.Context(), http.MethodPost, "/v1/redrive", req, &out); err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(w)
				enc.SetIndent("", "  ")
				return enc.Encode(out)
			}
			if req.DryRun {
				fmt.Fprintf(w, "dry run: would send %d records, skip %d (completed)\n", out.WouldSend, out.Skipped)
			} else {
				fmt.Fprintf(w, "sent %d records, skipped %d (completed)\n", out.Sent, out.Skipped)
			}
			if len(out.Records) == 0 {
				return nil
			}
			tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "STREAM\tSHARD\tSEQUENCE\tPARTITION KEY\tIDEMPOTENCY KEY\tCONDITION")
			for _, r := range out.Records {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", r.Stream, r.Shard, r.SequenceNumber, r.PartitionKey, r.IdempotencyKey, r.Condition)
			}
			if n := out.WouldSend - len(out.Records); n > 0 {
				fmt.Fprintf(tw, "… and %d more\n", n)
			}
			return tw.Flush()
		},
	}
	addrFlag(cmd, &addr)
	cmd.Flags().StringVar(&req.From, "from", "", "the on-failure stream to redrive")
	cmd.Flags().StringVar(&req.Mapping, "mapping", "", "redrive the records this mapping discarded, to its source stream")
	cmd.Flags().StringVar(&req.Function, "function", "", "redrive the asynchronous events this function gave up, to its queue")
	cmd.Flags().BoolVar(&req.DryRun, "dry-run", false, "print what would be sent; send nothing")
	cmd.Flags().BoolVar(&req.NewKeys, "new-keys", false, "do not keep the records' original idempotency keys (completed ones run again)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.MarkFlagRequired("from")
	return cmd
}
