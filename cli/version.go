package cli

import (
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/idem-run/idem/internal/buildinfo"
)

// versionCmd prints what the binary was built from, as the Go toolchain
// recorded it: what a bug report needs, and what idem_build_info says
// of a running server.
func versionCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print idem's version, VCS revision and Go version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			bi := buildinfo.Read()
			out := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				return enc.Encode(struct {
					Version   string `json:"version"`
					Revision  string `json:"revision"`
					Modified  bool   `json:"modified"`
					GoVersion string `json:"goVersion"`
				}{bi.Version, bi.Revision, bi.Modified, bi.GoVersion})
			}
			rev := bi.Revision
			if bi.Modified {
				rev += " (modified)"
			}
			_, err := fmt.Fprintf(out, "idem %s\nrevision %s\nbuilt with %s\n", bi.Version, rev, bi.GoVersion)
			return err
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}
