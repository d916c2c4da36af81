package cli

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/idem-run/idem/engine"
	"github.com/idem-run/idem/server"
)

// replayCmd is `idem replay`: what a mapping would run, and skip as
// completed in its scope, if it read its shards again from a starting
// position (--dry-run), and moving its checkpoints there (without).
func replayCmd() *cobra.Command {
	var addr, mapping, from, timestamp, scope string
	var dryRun, asJSON bool
	var first int
	cmd := &cobra.Command{
		Use:   "replay --mapping M --from TRIM_HORIZON|LATEST|AT_TIMESTAMP [--timestamp RFC3339] [--scope S] [--dry-run] [--json]",
		Short: "Count what a mapping would run and skip if it read again from a position; without --dry-run, move its checkpoints there",
		Long: `Replay reads the records in retention from a starting position and counts
how many the mapping would run and how many it would skip because their
idempotency key is already completed in its scope (or, with --scope, in
another scope), honouring its filterCriteria. It lists the first records
that would run.

A renamed or recreated mapping of the same stream and scope starts with no
checkpoint, from its starting position: a dry run of the mapping from that
position shows what the new one would run, before anything runs.

Without --dry-run it also moves the mapping's checkpoint in every shard to
the position. The mapping must be paused (idem mappings pause M); it reads
from the moved checkpoints once resumed, and skips what its scope completed.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if strings.ToUpper(from) == "AT_TIMESTAMP" && timestamp == "" {
				return usageError{errors.New("--from AT_TIMESTAMP needs --timestamp")}
			}
			if timestamp != "" {
				if _, err := time.Parse(time.RFC3339Nano, timestamp); err != nil {
					return usageError{fmt.Errorf("--timestamp: %w", err)}
				}
			}
			req := server.ReplayRequest{From: strings.ToUpper(from), Timestamp: timestamp, Scope: scope, DryRun: dryRun, First: first}
			bar := !asJSON && isTerminal(cmd.ErrOrStderr())
			rep, err := newClient(addr).replay(cmd.Context(), mapping, req, bar, cmd.ErrOrStderr())
			if err != nil {
				return fmt.Errorf("mapping %q: %w", mapping, err)
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(rep)
			}
			return printReplay(cmd.OutOrStdout(), rep)
		},
	}
	addrFlag(cmd, &addr)
	cmd.Flags().StringVar(&mapping, "mapping", "", "mapping name")
	cmd.Flags().StringVar(&from, "from", "", "starting position: TRIM_HORIZON, LATEST or AT_TIMESTAMP")
	cmd.Flags().StringVar(&timestamp, "timestamp", "", "AT_TIMESTAMP's time, RFC 3339")
	cmd.Flags().StringVar(&scope, "scope", "", "with --dry-run: count as if the mapping used this idempotency scope")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "only count: run nothing and move no checkpoint")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the report as JSON")
	cmd.Flags().IntVar(&first, "first", engine.DefaultReplayFirst, "how many of the records that would run to list")
	cmd.MarkFlagRequired("mapping")
	cmd.MarkFlagRequired("from")
	return cmd
}

// isTerminal reports whether w is a terminal, where a progress bar may be
// drawn.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// replay asks the server for a replay: a dry run as GET (a read token may
// ask it), a move as POST. With bar, the answer streams progress, drawn as
// a progress bar on barOut. It has no overall timeout: reading a day of
// retention may take long, and the server answers or streams meanwhile.
func (c *client) replay(ctx context.Context, mapping string, req server.ReplayRequest, bar bool, barOut io.Writer) (engine.ReplayReport, error) {
	var rep engine.ReplayReport
	path := "/v1/mappings/" + url.PathEscape(mapping) + "/replay"
	method := http.MethodPost
	var body any = req
	if req.DryRun {
		method, body = http.MethodGet, nil
		q := url.Values{"from": {req.From}, "first": {strconv.Itoa(req.First)}}
		if req.Timestamp != "" {
			q.Set("timestamp", req.Timestamp)
		}
		if req.Scope != "" {
			q.Set("scope", req.Scope)
		}
		path += "?" + q.Encode()
	}
	accept := ""
	if bar {
		accept = server.ReplayProgressContentType
	}
	hc := *c.http
	hc.Timeout = 0
	resp, err := c.send(ctx, &hc, method, path, body, accept)
	if err != nil {
		return rep, err
	}
	defer resp.Body.Close()
	if resp.Header.Get("Content-Type") != server.ReplayProgressContentType {
		if err := json.NewDecoder(resp.Body).Decode(&rep); err != nil {
			return rep, fmt.Errorf("reading the report: %w", err)
		}
		return rep, nil
	}
	return readReplayStream(resp.Body, barOut)
}

// readReplayStream reads a streamed replay answer (progress lines, then
// the report or an error), drawing the progress as a bar on out.
func readReplayStream(r io.Reader, out io.Writer) (engine.ReplayReport, error) {
	var rep engine.ReplayReport
	var pb *progressbar.ProgressBar
	defer func() {
		if pb != nil {
			_ = pb.Clear()
		}
	}()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		var line struct {
			Progress *uint64 `json:"progress"`
			Total    uint64  `json:"total"`
			Error    string  `json:"error"`
		}
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			return rep, fmt.Errorf("reading the report: %w", err)
		}
		switch {
		case line.Error != "":
			return rep, errors.New(line.Error)
		case line.Progress != nil:
			if pb == nil {
				max := int64(line.Total)
				if max == 0 {
					max = -1 // a spinner: the source does not tell how many
				}
				pb = progressbar.NewOptions64(max, progressbar.OptionSetWriter(out), progressbar.OptionSetDescription("reading records"),
					progressbar.OptionShowCount(), progressbar.OptionThrottle(100*time.Millisecond), progressbar.OptionClearOnFinish())
			}
			if n := int64(*line.Progress); pb.GetMax64() >= 0 && n > pb.GetMax64() {
				pb.ChangeMax64(n) // more than the estimate
			}
			_ = pb.Set64(int64(*line.Progress))
		default:
			if err := json.Unmarshal(sc.Bytes(), &rep); err != nil {
				return rep, fmt.Errorf("reading the report: %w", err)
			}
			return rep, nil
		}
	}
	if err := sc.Err(); err != nil {
		return rep, fmt.Errorf("reading the report: %w", err)
	}
	return rep, errors.New("the answer ended before the report: see idem serve's log")
}

// printReplay writes a replay's report for people.
func printReplay(w io.Writer, rep engine.ReplayReport) error {
	from := rep.From
	if !rep.Timestamp.IsZero() {
		from += " " + rep.Timestamp.Format(time.RFC3339)
	}
	fmt.Fprintf(w, "mapping %s (stream %s, scope %s) from %s: %d records in retention\n", rep.Mapping, rep.Stream, rep.Scope, from, rep.Records)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "  would run\t%d\n", rep.WouldRun)
	fmt.Fprintf(tw, "  would skip\t%d\t(already completed in scope %s)\n", rep.WouldSkip, rep.Scope)
	if rep.Duplicates > 0 {
		fmt.Fprintf(tw, "  duplicates\t%d\t(a payload key an earlier record of the replay has: skipped once it ran)\n", rep.Duplicates)
	}
	if rep.Filtered > 0 {
		fmt.Fprintf(tw, "  filtered\t%d\t(rejected by the mapping's filterCriteria)\n", rep.Filtered)
	}
	if rep.KeyErrors > 0 {
		fmt.Fprintf(tw, "  key errors\t%d\t(no idempotency key: sent to the on-failure destination)\n", rep.KeyErrors)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(rep.First) > 0 {
		fmt.Fprintf(w, "\nfirst %d that would run:\n", len(rep.First))
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "STREAM\tSHARD\tSEQUENCE\tPARTITION KEY\tIDEMPOTENCY KEY")
		for _, r := range rep.First {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.Stream, r.Shard, r.Sequence, r.PartitionKey, r.IdempotencyKey)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	var err error
	if rep.Moved {
		_, err = fmt.Fprintf(w, "\ncheckpoints of %d shards moved to %s: resume the mapping (idem mappings resume %s) to run them\n", len(rep.Shards), from, rep.Mapping)
	} else {
		_, err = fmt.Fprintln(w, "\ndry run: nothing ran and no checkpoint moved")
	}
	return err
}
