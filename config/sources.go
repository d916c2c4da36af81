package config

import "embed"

// Sources holds the config types' source files, whose doc comments the
// schema generator (package config/schema) turns into descriptions and
// defaults.
//
//go:embed config.go invoke.go lease.go
var Sources embed.FS
