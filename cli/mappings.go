package cli

import (
	"fmt"
	"io"
	"net/http"
	"net/url"

	"github.com/spf13/cobra"

	"github.com/idem-run/idem/server"
)

// mappingsCmd is `idem mappings pause|resume NAME`: the control plane's
// UpdateEventSourceMapping Enabled false and true, by mapping name.
func mappingsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "mappings",
		Short: "Pause and resume mappings of a running idem",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(
		setPausedCmd("pause", "Pause a mapping: its shards finish and commit the batch in flight, then read nothing more (it stays paused across restarts)", false),
		setPausedCmd("resume", "Resume a paused mapping", true),
	)
	return cmd
}

// updateMapping is the body of UpdateEventSourceMapping that pause and
// resume send.
type updateMapping struct {
	Enabled bool `json:"Enabled"`
}

func setPausedCmd(verb, short string, enabled bool) *cobra.Command {
	var addr string
	cmd := &cobra.Command{
		Use:   verb + " NAME",
		Short: short,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			path := "/2015-03-31/event-source-mappings/" + url.PathEscape(server.MappingUUID(name))
			var out struct{ State string }
			if err := newClient(addr).do(cmd.Context(), http.MethodPut, path, updateMapping{Enabled: enabled}, &out); err != nil {
				return fmt.Errorf("mapping %q: %w", name, err)
			}
			_, err := fmt.Fprintf(cmd.OutOrStdout(), "mapping %s: %s\n", name, map[bool]string{true: "resumed", false: "paused"}[enabled])
			return err
		},
	}
	addrFlag(cmd, &addr)
	return cmd
}

// printMappings writes the mappings' part of `idem status`.
func printMappings(w io.Writer, ms []server.MappingStatus) {
	if len(ms) == 0 {
		return
	}
	fmt.Fprintln(w, "\nMAPPING\tSTATE\tFUNCTION\tSTREAM\tLAST PROCESSING RESULT")
	for _, m := range ms {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", m.Name, m.State, m.Function, m.Stream, m.LastProcessingResult)
	}
}
