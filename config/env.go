package config

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/goccy/go-yaml"
)

// expander expands environment variables in the values of string settings
// (see "Environment variables" in the package doc), and remembers what came
// from the environment so that no problem shows it.
type expander struct {
	lookup func(name string) (string, bool)
	from   map[string]expansion // path → its value as written and as expanded
	values map[string]string    // variable → its value, where it was used
}

// expansion is a value that referred to a variable.
type expansion struct{ written, value string }

func newExpander(lookup func(string) (string, bool)) *expander {
	if lookup == nil {
		lookup = func(string) (string, bool) { return "", false }
	}
	return &expander{lookup: lookup, from: make(map[string]expansion), values: make(map[string]string)}
}

// expand returns s, the value at path, with ${NAME} and ${NAME:-default}
// replaced and $${ turned into a literal ${.
func (x *expander) expand(path, s string) (string, error) {
	if !strings.Contains(s, "${") {
		return s, nil
	}
	var b strings.Builder
	used := false
	rest := s
	for {
		i := strings.Index(rest, "${")
		if i < 0 {
			b.WriteString(rest)
			break
		}
		if i > 0 && rest[i-1] == '$' {
			b.WriteString(rest[:i-1] + "${")
			rest = rest[i+2:]
			continue
		}
		b.WriteString(rest[:i])
		ref, after, ok := strings.Cut(rest[i+2:], "}")
		if !ok {
			return "", errors.New("${ without a closing } (write $${ for a literal ${)")
		}
		name, def, hasDef := strings.Cut(ref, ":-")
		if !validVarName(name) {
			return "", fmt.Errorf("${%s} is not a variable reference: a name is letters, digits and _, not starting with a digit (write $${ for a literal ${)", ref)
		}
		v, set := x.lookup(name)
		switch {
		case set && (v != "" || !hasDef):
			if v != "" {
				x.values[name] = v
			}
		case hasDef:
			v = def
		default:
			return "", fmt.Errorf("environment variable %s is not set", name)
		}
		b.WriteString(v)
		used = true
		rest = after
	}
	if used {
		x.from[path] = expansion{written: s, value: b.String()}
	}
	return b.String(), nil
}

func validVarName(s string) bool {
	for i, c := range s {
		if !(c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || i > 0 && c >= '0' && c <= '9') {
			return false
		}
	}
	return s != ""
}

// redact keeps values that came from the environment out of errs. A problem
// about a setting that referred to a variable shows the setting as written,
// "(from ${PG_DSN})", instead of its value, and without the cause it wraps
// (a URL parser's message quotes pieces of the URL); and a variable's value
// is replaced by ${NAME} wherever else it would appear.
func (x *expander) redact(errs []*FieldError) {
	if len(x.values) == 0 && len(x.from) == 0 {
		return
	}
	names := make([]string, 0, len(x.values))
	for name := range x.values {
		names = append(names, name)
	}
	// Longer values first, so that one containing another is replaced whole.
	slices.SortFunc(names, func(a, b string) int {
		return cmp.Or(cmp.Compare(len(x.values[b]), len(x.values[a])), cmp.Compare(a, b))
	})
	const mark = "\x00"
	for _, e := range errs {
		if e.Err == nil {
			continue
		}
		msg := e.Err.Error()
		ex, fromEnv := x.from[e.Path]
		if fromEnv {
			if cause := errors.Unwrap(e.Err); cause != nil {
				msg = strings.TrimSuffix(msg, ": "+cause.Error())
			}
			msg = strings.ReplaceAll(msg, strconv.Quote(ex.value), mark)
		}
		for _, name := range names {
			msg = strings.ReplaceAll(msg, x.values[name], "${"+name+"}")
		}
		if fromEnv {
			msg = strings.ReplaceAll(msg, mark, "(from "+ex.written+")")
		}
		if msg != e.Err.Error() {
			e.Err = errors.New(msg)
		}
	}
}

// MarshalYAML writes f so that Parse reads it back as it is: a ${ in a
// string value is written $${, which Parse reads as a literal ${ rather
// than as a variable.
func (f File) MarshalYAML() ([]byte, error) {
	type plain File // without this method
	return yaml.MarshalWithOptions(plain(f), yaml.CustomMarshaler[string](func(s string) ([]byte, error) {
		// Always quoted: goccy/go-yaml leaves some strings that need
		// quotes without (a leading tab).
		return []byte(strconv.Quote(strings.ReplaceAll(s, "${", "$${"))), nil
	}))
}
