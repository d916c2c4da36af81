package cli

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/idem-run/idem/config"
	"github.com/idem-run/idem/server"
)

// loadConfig reads the config file as `serve` runs it, with the overrides
// of --data and --listen, and checks it: config.Load's checks (YAML, keys,
// types, ranges, references), then server.Check's (the wiring, which needs
// the drivers and the handlers of opts). serve and validate both load
// through it, so that validate reports what serve would refuse, in the same
// words. It opens, creates and connects to nothing.
func loadConfig(file, dataDir, listen string, opts []server.Option) (*config.File, error) {
	cfg, err := config.Load(file)
	if err != nil {
		return nil, err
	}
	if dataDir != "" || listen != "" {
		if dataDir != "" {
			cfg.DataDir = dataDir
		}
		if listen != "" {
			cfg.Listen = listen
		}
		if err := cfg.Validate(); err != nil {
			return nil, err
		}
	}
	if err := server.Check(cfg, opts...); err != nil {
		return nil, inFile(file, err)
	}
	return cfg, nil
}

// inFile puts the file's name in front of each problem server.Check
// found, as config.Load does for its own, so that every line of a report
// names the file it is about.
func inFile(file string, err error) error {
	list := problems(err)
	out := make([]error, len(list))
	for i, e := range list {
		out[i] = fmt.Errorf("%s: %w", file, e)
	}
	return errors.Join(out...)
}

// problems returns the problems of an error made by errors.Join (config's
// and server's reports are), err itself for any other, and none for nil.
func problems(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// reportedError is a failure that the command has reported already: Run
// exits with exitError without printing it again.
type reportedError struct{ err error }

func (e reportedError) Error() string { return e.err.Error() }

func (e reportedError) Unwrap() error { return e.err }

// validateReport is what `idem validate --json` prints: whether the file
// is valid and, when not, every problem found.
type validateReport struct {
	// File is the config file as named on the command line.
	File string `json:"file"`
	// Valid reports that serve would accept the file (as far as validate
	// can tell without the live resources: see `idem validate --help`).
	Valid bool `json:"valid"`
	// Problems are the problems found, in the order serve reports them;
	// empty when Valid.
	Problems []configProblem `json:"problems"`
}

// configProblem is one problem of a config file in a validateReport.
type configProblem struct {
	// Path names the setting, as in mappings[0].batchSize; empty for the
	// file as a whole (unreadable, malformed YAML).
	Path string `json:"path,omitempty"`
	// Line is the 1-based line of the setting in the file, when known
	// (the checks of the wiring, done after parsing, know no lines).
	Line int `json:"line,omitempty"`
	// Message says what is wrong, without the path.
	Message string `json:"message"`
	// Text is the problem's line as validate and serve print it,
	// "FILE:LINE: path: message".
	Text string `json:"text"`
}

// newProblem describes one problem of a report by config.Load or
// loadConfig.
func newProblem(err error) configProblem {
	p := configProblem{Message: err.Error(), Text: err.Error()}
	var fe *config.FieldError
	if errors.As(err, &fe) {
		p.Path, p.Line = fe.Path, fe.Line
		if fe.Err != nil {
			p.Message = fe.Err.Error()
		}
	}
	return p
}

const validateHelp = `Check a config file as ` + "`idem serve`" + ` would, without running anything:
no data directory is created, no port is opened, no store or source is
connected to, no process function is started. It exits 0, printing
"FILE: ok", or 1, printing each problem on its own line to stderr in the
words serve would use (with --json, a report on stdout either way).

It checks what serve checks before it opens anything: the YAML, unknown
keys, types and ranges, the names that settings refer to (functions,
streams, on-failure destinations), what the store allows (lease and Kafka
consumer groups need a shared store), filter patterns, JMESPath keys,
tumbling windows, and the wiring: every in-process Go function must be
registered by the program running validate (run the validate of the program
that embeds idem), a process function's command must be an executable file
and its dir a directory, and dataDir, when it exists, a directory.

It cannot check what needs the live resources: whether PostgreSQL, Redis,
Kafka, NATS JetStream, Kinesis or DynamoDB can be reached and hold the
topics, streams and tables named, whether the data directory can be opened (or is locked by a
running idem), whether a stream's shards differ from those its data was
written with, and whether listen can be bound.`

func validateCmd(opts []server.Option) *cobra.Command {
	var file, dataDir, listen string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "validate -c FILE [--data DIR] [--listen ADDR] [--json]",
		Short: "Check a config file as serve would, without starting anything",
		Long:  validateHelp,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := loadConfig(file, dataDir, listen, opts)
			rep := validateReport{File: file, Valid: err == nil, Problems: []configProblem{}}
			for _, e := range problems(err) {
				rep.Problems = append(rep.Problems, newProblem(e))
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				if err := enc.Encode(rep); err != nil {
					return err
				}
			} else if err == nil {
				fmt.Fprintf(cmd.OutOrStdout(), "%s: ok\n", file)
			} else {
				for _, p := range rep.Problems {
					fmt.Fprintln(cmd.ErrOrStderr(), p.Text)
				}
			}
			if err != nil {
				return reportedError{err}
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&file, "config", "c", "", "config file (YAML)")
	cmd.Flags().StringVar(&dataDir, "data", "", "data directory, as serve's --data (overrides dataDir)")
	cmd.Flags().StringVar(&listen, "listen", "", "host:port of the HTTP API, as serve's --listen (overrides listen)")
	cmd.Flags().BoolVar(&asJSON, "json", false, `print a JSON report: {"file", "valid", "problems": [{"path", "line", "message", "text"}]}`)
	cmd.MarkFlagRequired("config")
	return cmd
}
