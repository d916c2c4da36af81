// Package config reads the one YAML file that `idem serve -c FILE` runs from.
//
// # Why it is strict
//
// A mapping's settings decide delivery semantics: a misspelt
// maximumRetryAttempts silently means "retry forever", a misspelt
// onFailure means records are dropped instead of kept for redrive, and an
// idempotency retention shorter than the stream's retention lets a replay of
// retained records run some of them twice. So the file is read strictly:
// unknown keys, values out of range and references to streams or functions
// that are not configured all stop the server before it touches any data,
// and every problem is reported at once, each naming its path in the file
// (mappings[0].batchSize) and the allowed range, so one edit fixes them all.
//
// # Defaults
//
// Parse applies the defaults of AWS Lambda event source mappings (and idem's
// own, documented on each field) to keys that are absent or null. A key that
// is present keeps its value, so `batchSize: 0` is an error rather than a
// silent 100. A File built in Go gets no defaults: Validate checks it as it
// is.
//
// # Environment variables
//
// The value of a string setting (a list item or a map value included; not
// a key, number, boolean or duration) may refer to environment variables, so
// that DSNs and tokens come from the environment or a secret mount instead of
// sitting in the file:
//
//	store:
//	  postgres:
//	    dsn: ${PG_DSN}
//	    schema: ${PG_SCHEMA:-idem}
//
// ${NAME} is the variable's value, and an unset variable is an error naming
// it and the setting; ${NAME:-default} is default when the variable is unset
// or empty. A name is letters, digits and _, not starting with a digit.
// $${ is a literal ${, and any other $ is literal. A problem with a value
// that came from the environment shows it as written, (from ${PG_DSN}), and
// never the value. ParseWithEnv takes the environment as a lookup function.
//
// # Layering
//
// The types here are plain data with YAML tags and a few read-only helpers.
// One place in the wiring converts them into engine, source and function
// options; this package knows no driver and starts nothing.
package config
