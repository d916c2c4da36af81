package cli

import (
	"github.com/spf13/cobra"

	"github.com/idem-run/idem/config/schema"
)

// configCmd groups the commands about the config file itself, as opposed to
// a running idem.
func configCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Commands about the config file (idem.yaml)",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(configSchemaCmd())
	return cmd
}

// configSchemaCmd prints the JSON Schema of the config file, which editors
// use to complete and check idem.yaml and which docs/idem.schema.json holds.
func configSchemaCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "schema",
		Short: "Print the JSON Schema of the config file",
		Long: `Print the JSON Schema (draft-07) of the config file: every key, its type,
range, default and description. Editors running yaml-language-server use it
when the file's first line names it:

  # yaml-language-server: $schema=docs/idem.schema.json

The schema checks each setting alone; idem serve and idem validate also
check what depends on other settings, such as the streams a mapping names.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			out, err := schema.Generate()
			if err != nil {
				return err
			}
			_, err = cmd.OutOrStdout().Write(out)
			return err
		},
	}
}
