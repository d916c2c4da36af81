// Package cli is idem's command line: `idem serve`, `validate`, `put`,
// `records`, `status`, `mappings`, `state` and `bench`. A program that
// embeds idem to register in-process Go functions calls Main with its
// handlers and gets the same commands.
package cli

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/internal/bench"
	"github.com/idem-run/idem/server"
)

// Exit codes.
const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
)

// Main runs the command line with os.Args and exits. opts are passed to the
// server by `serve` (in-process handlers, typically).
func Main(opts ...server.Option) {
	os.Exit(Run(context.Background(), os.Args[1:], os.Stdin, os.Stdout, os.Stderr, opts...))
}

// usageError marks mistakes in the command line itself.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }

// Run runs the command line with args and returns the exit code.
func Run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, opts ...server.Option) int {
	var verbose bool
	root := &cobra.Command{
		Use:           "idem",
		Short:         "Event-driven functions over streams, with exactly-once effects",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().BoolVarP(&verbose, "verbose", "v", false, "log debug detail")
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(
		serveCmd(&verbose, opts),
		validateCmd(opts),
		configCmd(),
		putCmd(),
		recordsCmd(),
		statusCmd(),
		mappingsCmd(),
		replayCmd(),
		stateCmd(),
		redriveCmd(),
		benchCmd(),
		versionCmd(),
	)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	var reported reportedError
	if errors.As(err, &reported) {
		return exitError
	}
	fmt.Fprintln(stderr, "idem:", err)
	var ue usageError
	if errors.As(err, &ue) || strings.HasPrefix(err.Error(), "unknown command") || strings.Contains(err.Error(), "required flag") {
		return exitUsage
	}
	return exitError
}

// defaultShutdownTimeout bounds `idem serve`'s shutdown: the engine's
// drain (10s), the HTTP API's (5s), and closing the storage.
const defaultShutdownTimeout = 30 * time.Second

func serveCmd(verbose *bool, opts []server.Option) *cobra.Command {
	var file, dataDir, listen string
	var shutdownTimeout time.Duration
	cmd := &cobra.Command{
		Use:   "serve -c FILE [--data DIR] [--listen ADDR]",
		Short: "Run streams, mappings and the HTTP API from a config file",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			level := slog.LevelInfo
			if *verbose {
				level = slog.LevelDebug
			}
			log := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: level}))
			cfg, err := loadConfig(file, dataDir, listen, opts)
			if err != nil {
				return err
			}
			srv, err := server.New(cfg, append([]server.Option{server.WithLogger(log)}, opts...)...)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			if err := serve(ctx, srv, shutdownTimeout); err != nil {
				return err
			}
			log.Info("idem stopped")
			return nil
		},
	}
	cmd.Flags().StringVarP(&file, "config", "c", "", "config file (YAML)")
	cmd.Flags().StringVar(&dataDir, "data", "", "data directory (overrides dataDir)")
	cmd.Flags().StringVar(&listen, "listen", "", "host:port of the HTTP API (overrides listen)")
	cmd.Flags().DurationVar(&shutdownTimeout, "shutdown-timeout", defaultShutdownTimeout,
		"on SIGTERM or interrupt, exit within this long, even if draining or closing the storage has not finished")
	cmd.MarkFlagRequired("config")
	return cmd
}

// serve runs srv until ctx is done, then stops and closes it within
// timeout. When the drain or the storage's Close hangs past it, serve
// returns an error, leaving them behind: the process is about to exit, and
// the storage recovers what was not closed at its next start (work in
// flight is delivered again).
func serve(ctx context.Context, srv *server.Server, timeout time.Duration) error {
	ran := make(chan error, 1)
	go func() { ran <- srv.Run(ctx) }()
	var runErr error
	var deadline <-chan time.Time
	select {
	case runErr = <-ran:
		deadline = time.After(timeout)
	case <-ctx.Done():
		deadline = time.After(timeout)
		select {
		case runErr = <-ran:
		case <-deadline:
			return fmt.Errorf("shutdown did not finish within --shutdown-timeout %s (in-flight work is delivered again at the next start); exiting", timeout)
		}
	}
	closed := make(chan error, 1)
	go func() { closed <- srv.Close() }()
	select {
	case err := <-closed:
		if err != nil && runErr == nil {
			runErr = fmt.Errorf("closing: %w", err)
		}
		return runErr
	case <-deadline:
		return errors.Join(runErr, fmt.Errorf("closing the storage did not finish within --shutdown-timeout %s (it recovers at the next start); exiting", timeout))
	}
}

// client talks to a running idem's HTTP API.
type client struct {
	base string
	http *http.Client
}

func newClient(addr string) *client {
	if !strings.Contains(addr, "://") {
		addr = "http://" + addr
	}
	return &client{base: strings.TrimRight(addr, "/"), http: &http.Client{Timeout: 30 * time.Second}}
}

func (c *client) do(ctx context.Context, method, path string, body, out any) error {
	resp, err := c.send(ctx, c.http, method, path, body, "")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("reading response: %w", err)
	}
	if out == nil {
		return nil
	}
	if raw, ok := out.(*[]byte); ok {
		*raw = data
		return nil
	}
	return json.Unmarshal(data, out)
}

// send sends a request with hc, with body as JSON (if not nil), the token
// of IDEM_TOKEN and accept (if not empty), and returns a 2xx answer; any
// other answer is returned as an error, with the server's error message.
// The caller closes the answer's body.
func (c *client) send(ctx context.Context, hc *http.Client, method, path string, body any, accept string) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	// With auth.tokens set, idem's put API wants one of them.
	if tok := os.Getenv("IDEM_TOKEN"); tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("is idem serve running at %s? %w", c.base, err)
	}
	if resp.StatusCode/100 == 2 {
		return resp, nil
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(data, &e) == nil && e.Error != "" {
		return nil, errors.New(e.Error)
	}
	return nil, fmt.Errorf("%s %s: %s", method, path, resp.Status)
}

func addrFlag(cmd *cobra.Command, addr *string) {
	cmd.Flags().StringVar(addr, "addr", "127.0.0.1:7070", "address of idem's HTTP API")
}

func putCmd() *cobra.Command {
	var addr, stream, key, data string
	cmd := &cobra.Command{
		Use:   "put --stream S --partition-key K [--data STRING]",
		Short: "Append records to a stream (without --data, one record per stdin line)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c := newClient(addr)
			path := "/v1/streams/" + url.PathEscape(stream) + "/records"
			send := func(recs []server.PutRecord) error {
				var resp server.PutResponse
				if err := c.do(cmd.Context(), http.MethodPost, path, server.PutRequest{Records: recs}, &resp); err != nil {
					return err
				}
				for _, r := range resp.Records {
					fmt.Fprintf(cmd.OutOrStdout(), "%s %s\n", r.ShardID, r.SequenceNumber)
				}
				return nil
			}
			if cmd.Flags().Changed("data") {
				return send([]server.PutRecord{{PartitionKey: key, Data: data}})
			}
			sc := bufio.NewScanner(cmd.InOrStdin())
			sc.Buffer(make([]byte, 64<<10), 2<<20)
			var batch []server.PutRecord
			size := 0
			for sc.Scan() {
				line := sc.Text()
				batch = append(batch, server.PutRecord{PartitionKey: key, Data: line})
				size += len(line)
				if len(batch) == 500 || size > 4<<20 {
					if err := send(batch); err != nil {
						return err
					}
					batch, size = batch[:0], 0
				}
			}
			if err := sc.Err(); err != nil {
				return fmt.Errorf("reading stdin: %w", err)
			}
			if len(batch) > 0 {
				return send(batch)
			}
			return nil
		},
	}
	addrFlag(cmd, &addr)
	cmd.Flags().StringVar(&stream, "stream", "", "stream name")
	cmd.Flags().StringVar(&key, "partition-key", "", "partition key (chooses the shard)")
	cmd.Flags().StringVar(&data, "data", "", "record data")
	cmd.MarkFlagRequired("stream")
	cmd.MarkFlagRequired("partition-key")
	return cmd
}

// streamInfo is the part of GET /v1/streams the CLI needs.
type streamInfo struct {
	Name   string `json:"name"`
	Shards []struct {
		ID string `json:"id"`
	} `json:"shards"`
}

func recordsCmd() *cobra.Command {
	var addr, stream, shard string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "records --stream S [--shard ID] [--json]",
		Short: "List a stream's records (for example an on-failure stream's)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c := newClient(addr)
			shards := []string{shard}
			if shard == "" {
				var infos []streamInfo
				if err := c.do(cmd.Context(), http.MethodGet, "/v1/streams", nil, &infos); err != nil {
					return err
				}
				shards = nil
				for _, in := range infos {
					if in.Name == stream {
						for _, sh := range in.Shards {
							shards = append(shards, sh.ID)
						}
					}
				}
				if shards == nil {
					return fmt.Errorf("stream %q not found", stream)
				}
			}
			out := cmd.OutOrStdout()
			enc := json.NewEncoder(out)
			for _, sh := range shards {
				after := ""
				for {
					q := url.Values{"shard": {sh}}
					if after != "" {
						q.Set("after", after)
					}
					var page server.RecordsResponse
					if err := c.do(cmd.Context(), http.MethodGet, "/v1/streams/"+url.PathEscape(stream)+"/records?"+q.Encode(), nil, &page); err != nil {
						return err
					}
					for _, r := range page.Records {
						if asJSON {
							if err := enc.Encode(r); err != nil {
								return err
							}
							continue
						}
						data := r.Data
						if r.DataBase64 != nil {
							data = fmt.Sprintf("(base64) %x", r.DataBase64)
						}
						fmt.Fprintf(out, "%s %s %s %s\n", r.ShardID, r.SequenceNumber, r.PartitionKey, data)
					}
					if page.Next == "" {
						break
					}
					after = page.Next
				}
			}
			return nil
		},
	}
	addrFlag(cmd, &addr)
	cmd.Flags().StringVar(&stream, "stream", "", "stream name")
	cmd.Flags().StringVar(&shard, "shard", "", "shard ID (default: every shard)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON lines")
	cmd.MarkFlagRequired("stream")
	return cmd
}

func statusCmd() *cobra.Command {
	var addr string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status [--json]",
		Short: "Show every mapping's shards: checkpoint, lag, in-flight and counters",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c := newClient(addr)
			var st server.StatusResponse
			if err := c.do(cmd.Context(), http.MethodGet, "/v1/status", nil, &st); err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				return enc.Encode(st)
			}
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "MAPPING\tSHARD\tSTATE\tCHECKPOINT\tLAG\tITERATOR AGE\tIN-FLIGHT\tINVOCATIONS\tRETRIES\tPROCESSED\tDISCARDED\tSKIPPED\tLOST")
			for _, s := range st.Shards {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\n", s.Mapping, s.Shard, s.State, shortSequence(s.Checkpoint), s.LagRecords,
					(time.Duration(s.IteratorAgeMs) * time.Millisecond).String(), s.InFlight, s.Invocations, s.Retries, s.Processed, s.Discarded, s.Skipped, s.Lost)
			}
			printMappings(tw, st.Mappings)
			if len(st.Functions) > 0 {
				fmt.Fprintln(tw, "\nFUNCTION\tKIND\tRUNNING\tRESTARTS\tCRASH LOOP\tLAST EXIT")
				for _, f := range st.Functions {
					fmt.Fprintf(tw, "%s\t%s\t%d/%d\t%d\t%v\t%s\n", f.Name, f.Kind, f.Running, f.Concurrency, f.Restarts, f.CrashLoop, f.LastExit)
				}
			}
			return tw.Flush()
		},
	}
	addrFlag(cmd, &addr)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func stateCmd() *cobra.Command {
	var addr, scope, key string
	cmd := &cobra.Command{
		Use:   "state --scope S --key K",
		Short: "Print the committed state value of a key in an idempotency scope",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var v []byte
			if err := newClient(addr).do(cmd.Context(), http.MethodGet, "/v1/state/"+url.PathEscape(scope)+"/"+url.PathEscape(key), nil, &v); err != nil {
				return err
			}
			_, err := fmt.Fprintf(cmd.OutOrStdout(), "%s\n", v)
			return err
		},
	}
	addrFlag(cmd, &addr)
	cmd.Flags().StringVar(&scope, "scope", "", "idempotency scope (default of a mapping: its function's name)")
	cmd.Flags().StringVar(&key, "key", "", "state key")
	cmd.MarkFlagRequired("scope")
	cmd.MarkFlagRequired("key")
	return cmd
}

// Bounds of `idem bench --shards`, `--batch-size` and `--marks`.
const (
	maxBenchShards    = 256
	maxBenchBatchSize = 10000
	maxBenchMarks     = 100_000_000
)

func benchCmd() *cobra.Command {
	var records, shards, batchSize, marks int
	var asJSON bool
	var dir, storeSpec string
	var scenarios []string
	var prof benchProfiles
	cmd := &cobra.Command{
		Use:   "bench [--records N] [--shards N] [--batch-size N] [--marks N] [--scenarios NAME,…] [--json] [--store embedded|postgres://…|redis://…|dynamodb://…] [--cpuprofile FILE] [--mutexprofile FILE]",
		Short: "Measure exactly-once against at-least-once and a per-record idempotency store, on this machine",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if shards < 1 || shards > maxBenchShards {
				return usageError{fmt.Errorf("--shards: %d is outside 1 to %d", shards, maxBenchShards)}
			}
			if batchSize < 1 || batchSize > maxBenchBatchSize {
				return usageError{fmt.Errorf("--batch-size: %d is outside 1 to %d", batchSize, maxBenchBatchSize)}
			}
			if marks < 0 || marks > maxBenchMarks {
				return usageError{fmt.Errorf("--marks: %d is outside 0 to %d", marks, maxBenchMarks)}
			}
			if err := bench.CheckScenarios(scenarios); err != nil {
				return usageError{fmt.Errorf("--scenarios: %w", err)}
			}
			if err := prof.start(); err != nil {
				return usageError{err}
			}
			rep, err := bench.Run(cmd.Context(), bench.Config{Records: records, Shards: shards, BatchSize: batchSize, Marks: marks,
				Dir: dir, Progress: cmd.ErrOrStderr(), Store: storeSpec, Scenarios: scenarios})
			if perr := prof.stop(); err == nil {
				err = perr
			}
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(rep)
			}
			return rep.WriteText(cmd.OutOrStdout())
		},
	}
	cmd.Flags().IntVar(&records, "records", 1_000_000, "records per scenario")
	cmd.Flags().IntVar(&shards, "shards", 4, "shards of the benchmark's stream (1 to 256)")
	cmd.Flags().IntVar(&batchSize, "batch-size", 100, "batch size of the benchmark's mappings (1 to 10000)")
	cmd.Flags().IntVar(&marks, "marks", 0, "live completion marks each scenario's store holds before it starts, as a store in use does (0 to 100000000)")
	cmd.Flags().StringSliceVar(&scenarios, "scenarios", nil, "run only these scenarios, by their JSON names: "+strings.Join(bench.ScenarioNames, ", ")+" (default: all)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON (one key per scenario, each with recordsPerSec)")
	cmd.Flags().StringVar(&dir, "dir", "", "scratch directory (default: a temporary one, removed after)")
	cmd.Flags().StringVar(&prof.cpu, "cpuprofile", "", "write the run's CPU profile to FILE (go tool pprof)")
	cmd.Flags().StringVar(&prof.mutex, "mutexprofile", "", "write where goroutines waited for locks during the run to FILE (go tool pprof)")
	cmd.Flags().StringVar(&storeSpec, "store", "embedded", "the store the scenarios and the per-record baseline use: embedded, a postgres:// DSN, redis://host:port[/db], or dynamodb://[host:port][/table][?region=R]")
	return cmd
}

// shortSequence drops a sequence's padding for reading by people.
func shortSequence(s idem.Sequence) string {
	if t := strings.TrimLeft(string(s), "0"); t != "" {
		return t
	}
	return "0"
}
