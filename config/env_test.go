package config

import (
	"errors"
	"strings"
	"testing"

	"github.com/goccy/go-yaml"
)

// env is a lookup over a fixed environment.
func env(vars map[string]string) func(string) (string, bool) {
	return func(name string) (string, bool) {
		v, ok := vars[name]
		return v, ok
	}
}

func TestParseEnv(t *testing.T) {
	t.Setenv("PG_DSN", "postgres://idem:hunter2@db:5432/idem")
	f, err := Parse([]byte("store: {postgres: {dsn: '${PG_DSN}'}}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := f.Store.Postgres.DSN; got != "postgres://idem:hunter2@db:5432/idem" {
		t.Errorf("dsn = %q", got)
	}

	for _, tt := range []struct {
		name, value string
		vars        map[string]string
		want        string
	}{
		{"inside text", "postgres://idem:${PW}@${HOST}:5432/idem", map[string]string{"PW": "pw", "HOST": "db"}, "postgres://idem:pw@db:5432/idem"},
		{"default when unset", "${PG_DSN:-postgres://localhost/idem}", nil, "postgres://localhost/idem"},
		{"default when empty", "${PG_DSN:-postgres://localhost/idem}", map[string]string{"PG_DSN": ""}, "postgres://localhost/idem"},
		{"set wins over default", "${PG_DSN:-postgres://localhost/idem}", map[string]string{"PG_DSN": "postgres://db/x"}, "postgres://db/x"},
		{"empty default", "postgres://db/x${SUFFIX:-}", nil, "postgres://db/x"},
		{"escape", "postgres://db/$${PG_DSN}", nil, "postgres://db/${PG_DSN}"},
		{"escape after a $", "postgres://db/$$${X}", map[string]string{"X": "y"}, "postgres://db/$${X}"},
		{"lone dollars", "postgres://db/$x$$y$", nil, "postgres://db/$x$$y$"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f, err := ParseWithEnv([]byte("store: {postgres: {dsn: '"+tt.value+"'}}\n"), env(tt.vars))
			if err != nil {
				t.Fatal(err)
			}
			if got := f.Store.Postgres.DSN; got != tt.want {
				t.Errorf("dsn = %q, want %q", got, tt.want)
			}
		})
	}

	// Lists and maps of strings expand too.
	f, err = ParseWithEnv([]byte("auth: {tokens: ['${TOKEN}']}\nfunctions: [{name: f, process: {command: ./b, env: {KEY: '${KEY}'}}}]\n"),
		env(map[string]string{"TOKEN": "0123456789abcdef0123", "KEY": "v"}))
	if err != nil {
		t.Fatal(err)
	}
	if f.Auth.Tokens[0] != "0123456789abcdef0123" || f.Functions[0].Process.Env["KEY"] != "v" {
		t.Errorf("tokens %q, env %q", f.Auth.Tokens, f.Functions[0].Process.Env)
	}
}

func TestParseEnvErrors(t *testing.T) {
	for _, tt := range []struct{ name, yaml, want string }{
		{"unset", "store:\n  postgres:\n    dsn: ${PG_DSN}\n",
			"store.postgres.dsn: environment variable PG_DSN is not set"},
		{"unterminated", "store: {postgres: {dsn: 'x${PG_DSN'}}\n",
			"store.postgres.dsn: ${ without a closing } (write $${ for a literal ${)"},
		{"bad name", "store: {postgres: {dsn: '${1PG}'}}\n",
			"store.postgres.dsn: ${1PG} is not a variable reference: a name is letters, digits and _, not starting with a digit (write $${ for a literal ${)"},
		{"keys are not expanded", "'${KEY}': 1\n", `"${KEY}": unknown key`},
		{"only strings are expanded", mappingDoc("    batchSize: ${N}\n"), `mappings[0].batchSize: expected an integer, got "${N}"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseWithEnv([]byte(tt.yaml), env(map[string]string{"KEY": "k", "N": "5"}))
			if err == nil || err.Error() != tt.want {
				t.Fatalf("error %v, want %s", err, tt.want)
			}
		})
	}

	_, err := ParseWithEnv([]byte("store:\n  postgres:\n    dsn: ${PG_DSN}\n"), nil)
	var fe *FieldError
	if !errors.As(err, &fe) || fe.Path != "store.postgres.dsn" || fe.Line != 3 {
		t.Errorf("FieldError %+v, want store.postgres.dsn at line 3", fe)
	}
}

// A value that came from the environment is never shown in a problem.
func TestParseEnvSecretsNotShown(t *testing.T) {
	const secret = "s3cret-Pa55word"
	vars := map[string]string{
		"LISTEN": "localhost-" + secret,
		"HOOK":   "http://user:" + secret + "%zz@example.com/",
		"DATA":   "/var/" + secret,
		"SCOPE":  "scope " + secret,
		"KEY":    "order.[" + secret,
		"TOKEN":  secret,
	}
	doc := "dataDir: ${DATA}\nlisten: ${LISTEN}\nlease: {}\nauth: {tokens: ['${TOKEN}', 'x${TOKEN}']}\n" +
		"functions: [{name: f, http: {url: '${HOOK}'}}]\n" +
		"streams: [{name: s}]\n" +
		"mappings: [{name: m, function: f, startingPosition: LATEST, source: {stream: s}, idempotency: {scope: '${SCOPE}', key: '${KEY}'}}]\n"
	_, err := ParseWithEnv([]byte(doc), env(vars))
	if err == nil {
		t.Fatal("Parse accepted invalid values")
	}
	want := []string{
		"listen: (from ${LISTEN}) is not a host:port address",
		"lease: needs a shared store (store.postgres, store.redis or store.dynamodb): the embedded store belongs to the one process that owns ${DATA}",
		"auth.tokens[0]: a token of 15 characters is too short",
		"functions[0].http.url: (from ${HOOK}) is not an absolute http or https URL",
		"mappings[0].idempotency.scope: (from ${SCOPE}) is not a valid scope",
		"mappings[0].idempotency.key: (from ${KEY}) is not a valid JMESPath expression",
	}
	problems := flatten(err)
	if len(problems) != len(want) {
		t.Fatalf("problems:\n%v\nwant %d", err, len(want))
	}
	for i, p := range problems {
		if !strings.HasPrefix(p.Error(), want[i]) {
			t.Errorf("problem %d = %q, want it to start with %q", i, p, want[i])
		}
	}
	for _, part := range []string{secret, secret[:6], "%zz", "Pa55"} {
		if strings.Contains(err.Error(), part) {
			t.Errorf("%q shown in:\n%v", part, err)
		}
	}
}

// A File whose values hold ${ is written so that Parse reads them back.
func TestMarshalEscapes(t *testing.T) {
	f, err := ParseWithEnv([]byte("dataDir: '$${HOME}/$$${X}'\n"), env(map[string]string{"X": "y"}))
	if err != nil {
		t.Fatal(err)
	}
	if f.DataDir != "${HOME}/$${X}" {
		t.Fatalf("dataDir = %q", f.DataDir)
	}
	out, err := yaml.Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	g, err := ParseWithEnv(out, nil)
	if err != nil {
		t.Fatalf("Parse(Marshal(f)): %v\n%s", err, out)
	}
	if g.DataDir != f.DataDir {
		t.Errorf("dataDir %q, then %q", f.DataDir, g.DataDir)
	}
}
