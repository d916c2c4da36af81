package postgres

import (
	"strconv"
	"testing"
)

func TestSplitValuesRow(t *testing.T) {
	for _, c := range []struct {
		sql    string
		params int
		row    string // "" when it cannot be joined
		joined string // joined of 2 rows, when given
	}{
		{sql: "INSERT INTO t (a, b) VALUES ($1, $2)", params: 2, row: "($1, $2)", joined: "INSERT INTO t (a, b) VALUES ($1, $2), ($3, $4)"},
		{sql: "insert into t values ($2, $1) on conflict do nothing", params: 2, row: "($2, $1)", joined: "insert into t values ($2, $1), ($4, $3) on conflict do nothing"},
		{sql: "INSERT INTO t (a) VALUES ($1::jsonb) ON CONFLICT (a) DO UPDATE SET b = excluded.b", params: 1, row: "($1::jsonb)"},
		{sql: "INSERT INTO t VALUES ($1, DEFAULT, NULL, CURRENT_TIMESTAMP, 'a''(b', E'x\\'$1', $$($2)$$, $q$ $1 $q$, -1.5e3, ARRAY[$1, $1]) RETURNING id", params: 1,
			row: "($1, DEFAULT, NULL, CURRENT_TIMESTAMP, 'a''(b', E'x\\'$1', $$($2)$$, $q$ $1 $q$, -1.5e3, ARRAY[$1, $1])"},
		{sql: "/* (x) $9 */ INSERT -- VALUES ($1)\n INTO \"VALUES\" (\"(\") VALUES ($1 /* ( */)", params: 1, row: "($1 /* ( */)"},
		{sql: "INSERT INTO t (a) VALUES ($1) -- $2", params: 1, row: "($1)"},
		{sql: "INSERT INTO t (a) VALUES ($1), ($2)", params: 2},                                // two rows
		{sql: "INSERT INTO t (a) VALUES (nextval('s'))", params: 0},                            // a function call
		{sql: "INSERT INTO t (a) VALUES ((SELECT max(a) FROM t) + 1)", params: 0},              // a sub-select
		{sql: "INSERT INTO t (a) VALUES ($1) ON CONFLICT (a) DO UPDATE SET b = $1", params: 1}, // a parameter after the row
		{sql: "INSERT INTO t (a) VALUES ($3)", params: 2},                                      // beyond the statement's parameters
		{sql: "INSERT INTO t (a) VALUES ($0)", params: 2},
		{sql: "INSERT INTO t (a) SELECT $1", params: 1},
		{sql: "INSERT INTO t DEFAULT VALUES", params: 0},
		{sql: "INSERT INTO t (a) SELECT * FROM (VALUES ($1)) v", params: 1},
		{sql: "WITH x AS (SELECT 1) INSERT INTO t (a) VALUES ($1)", params: 1},
		{sql: "UPDATE t SET a = $1", params: 1},
		{sql: "INSERT INTO t (a) VALUES ($1); DELETE FROM t", params: 1},
		{sql: "INSERT INTO t (a) VALUES ('unterminated)", params: 0},
		{sql: "INSERT INTO t (a) VALUES ($1abc)", params: 1},
		{sql: "INSERT INTO t (a) VALUES ($1) /* unterminated", params: 1},
	} {
		v, ok := splitValuesRow(c.sql, c.params)
		if ok != (c.row != "") || ok && v.Row != c.row {
			t.Errorf("splitValuesRow(%q) = %q, %v; want %q", c.sql, v.Row, ok, c.row)
			continue
		}
		if !ok {
			continue
		}
		if got := v.Head + v.Row + v.Tail; got != c.sql {
			t.Errorf("split of %q joins back to %q", c.sql, got)
		}
		if c.joined != "" {
			if got := v.joined(2, c.params); got != c.joined {
				t.Errorf("joined(2) of %q = %q, want %q", c.sql, got, c.joined)
			}
		}
	}
}

// FuzzSplitValuesRow: whatever the text, splitting never panics, a split
// joins back to the text, one row joined is the text itself, and k rows
// hold k times the row's parameters, none above k*params.
func FuzzSplitValuesRow(f *testing.F) {
	for _, s := range []string{
		"INSERT INTO t (a, b) VALUES ($1, $2)", "insert into t values ($2, $1) on conflict do nothing",
		"INSERT INTO t VALUES ($1, 'a''(b', E'x\\'$1', $$($2)$$, $q$ $1 $q$) RETURNING id",
		"/* (x) /* $9 */ */ INSERT INTO \"VALUES\" VALUES ($1 -- )\n)", "INSERT INTO t (a) VALUES ($1), ($2)",
	} {
		f.Add(s, 2)
	}
	f.Fuzz(func(t *testing.T, sql string, params int) {
		params = params & 0xff
		v, ok := splitValuesRow(sql, params)
		if !ok {
			return
		}
		if v.Head+v.Row+v.Tail != sql {
			t.Fatalf("split of %q joins back to %q", sql, v.Head+v.Row+v.Tail)
		}
		if got := v.joined(1, params); got != sql {
			t.Fatalf("one row of %q joined is %q", sql, got)
		}
		inRow := countParams(t, v.Row, params)
		const k = 3
		if n := countParams(t, v.joined(k, params), k*params); n != k*inRow {
			t.Fatalf("%d rows of %q hold %d parameters, want %d", k, sql, n, k*inRow)
		}
	})
}

// countParams counts the parameters of sql, failing t on one above max.
func countParams(t *testing.T, sql string, max int) int {
	t.Helper()
	lx := sqlLexer{s: sql}
	n := 0
	for tk := lx.next(); tk.kind != tokEnd; tk = lx.next() {
		if tk.kind == tokParam {
			n++
			if v, err := strconv.Atoi(tk.text[1:]); err != nil || v < 1 || v > max {
				t.Fatalf("parameter %q in %q, beyond $%d", tk.text, sql, max)
			}
		}
		if tk.kind == tokBad {
			t.Fatalf("%q lexes badly at %d", sql, tk.pos)
		}
	}
	return n
}
