package postgres

import (
	"strconv"
	"strings"
)

// # Joining deferred INSERTs
//
// Records that each defer the same INSERT of one row are the commonest use
// of Defer, and PostgreSQL runs each statement separately: its executor set
// up and torn down, its row inserted, its answer sent, about as much again
// as the row itself. A flush therefore sends a run of deferred statements of
// one SQL text, one after the other in the queue, as one INSERT of their
// rows, when the text is an INSERT of one VALUES row whose expressions
// cannot tell the two apart:
//
//	INSERT INTO shop.shipments (order_id, body) VALUES ($1, $2) ON CONFLICT DO NOTHING
//
// becomes, for three records,
//
//	INSERT INTO shop.shipments (order_id, body) VALUES ($1, $2), ($3, $4), ($5, $6) ON CONFLICT DO NOTHING
//
// with the three statements' encoded arguments one after the other. The
// rows are inserted in the order deferred. The row may hold parameters,
// constants, casts, keywords (DEFAULT, NULL, CURRENT_TIMESTAMP) and
// operators, and no parenthesis: a function call or a sub-select could read
// what the rows before it wrote, which one statement's snapshot does not
// show, where separate statements do. Parameters may appear only in the
// row, since a clause after it (ON CONFLICT ... WHERE v < $1) is written
// once for all the rows.
//
// When a joined INSERT fails, which record's row failed is unknown: the
// flush rolls back to its savepoint and sends the statements one by one,
// so that the failure is found, and handled, as if they had never been
// joined. A row that conflicts with another row of the same INSERT (ON
// CONFLICT DO UPDATE cannot touch one row twice) fails the joined statement
// and so ends up run alone. What does differ is what runs at a
// statement's end: a statement-level trigger fires once for the joined
// rows, AFTER ROW triggers and foreign-key checks run after all of them
// (so a row that references a row of its own table deferred after it is
// accepted, where alone it would fail), and rules see one statement.
// WithoutJoinedInserts turns the joining off.

// valuesRow is an INSERT of one VALUES row, split around the row: Head
// ends before the row's "(", Row is the row with its parentheses, Tail is
// what follows it.
type valuesRow struct {
	Head, Row, Tail string
}

// maxJoinedRows bounds the rows of one joined INSERT (and PostgreSQL, its
// parameters at 65,535).
const maxJoinedRows = 1000

// splitValuesRow splits sql around its VALUES row, when sql is an INSERT of
// one VALUES row that can be joined with others (see above) and whose
// parameters, all in the row, are at most params.
func splitValuesRow(sql string, params int) (valuesRow, bool) {
	lx := sqlLexer{s: sql}
	t := lx.next()
	if t.kind != tokWord || !strings.EqualFold(t.text, "INSERT") {
		return valuesRow{}, false
	}
	// VALUES at the top level, no parameter before it.
	for depth := 0; ; {
		t = lx.next()
		if t.kind == tokEnd || t.kind == tokBad || t.kind == tokParam || t.kind == tokSemicolon {
			return valuesRow{}, false
		}
		if t.kind == tokOpen {
			depth++
		} else if t.kind == tokClose {
			depth--
		} else if t.kind == tokWord && depth == 0 && strings.EqualFold(t.text, "VALUES") {
			break
		}
	}
	if t = lx.next(); t.kind != tokOpen {
		return valuesRow{}, false // DEFAULT VALUES, or not SQL we know
	}
	open := t.pos
	// The row: parameters up to params, no parenthesis inside.
	for t = lx.next(); t.kind != tokClose; t = lx.next() {
		switch t.kind {
		case tokEnd, tokBad, tokOpen, tokSemicolon:
			return valuesRow{}, false
		case tokParam:
			if n, err := strconv.Atoi(t.text[1:]); err != nil || n < 1 || n > params {
				return valuesRow{}, false
			}
		case tokWord:
			if strings.EqualFold(t.text, "SELECT") || strings.EqualFold(t.text, "VALUES") {
				return valuesRow{}, false
			}
		}
	}
	v := valuesRow{Head: sql[:open], Row: sql[open : t.pos+1], Tail: sql[t.pos+1:]}
	// One row only, and no parameter after it.
	t = lx.next()
	if t.kind == tokComma {
		return valuesRow{}, false
	}
	for ; t.kind != tokEnd; t = lx.next() {
		if t.kind == tokBad || t.kind == tokParam || t.kind == tokSemicolon {
			return valuesRow{}, false
		}
	}
	return v, true
}

// joined returns the INSERT of rows copies of v's row, the parameters of
// copy i (from 0) renumbered from $1..$params to $(i*params+1).. on.
func (v valuesRow) joined(rows, params int) string {
	var b strings.Builder
	b.Grow(len(v.Head) + rows*(len(v.Row)+8) + len(v.Tail))
	b.WriteString(v.Head)
	for i := range rows {
		if i > 0 {
			b.WriteString(", ")
		}
		lx := sqlLexer{s: v.Row}
		last := 0
		for t := lx.next(); t.kind != tokEnd; t = lx.next() {
			if t.kind != tokParam {
				continue
			}
			n, _ := strconv.Atoi(t.text[1:]) // splitValuesRow checked it
			b.WriteString(v.Row[last:t.pos])
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(i*params + n))
			last = t.pos + len(t.text)
		}
		b.WriteString(v.Row[last:])
	}
	b.WriteString(v.Tail)
	return b.String()
}

// tokKind is the kind of a token of SQL, as far as joining needs to know.
type tokKind int

const (
	tokEnd       tokKind = iota
	tokBad               // unterminated string, identifier or comment
	tokWord              // a keyword or an unquoted identifier
	tokParam             // $n
	tokOpen              // (
	tokClose             // )
	tokComma             // ,
	tokSemicolon         // ;
	tokOther             // a constant, a quoted identifier, an operator
)

type token struct {
	kind tokKind
	text string
	pos  int
}

// sqlLexer reads PostgreSQL's SQL as its scanner does for what matters
// here: comments (nested /* */ included) and the contents of strings
// ('...', E'...' with backslash escapes, $tag$...$tag$) and quoted
// identifiers are never taken for parameters, parentheses or keywords.
// It assumes standard_conforming_strings, PostgreSQL's default.
type sqlLexer struct {
	s string
	i int
}

func isIdentStart(c byte) bool {
	return c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= 0x80
}

func isIdentChar(c byte) bool {
	return isIdentStart(c) || c >= '0' && c <= '9' || c == '$'
}

func (lx *sqlLexer) next() token {
	s := lx.s
	for lx.i < len(s) {
		start := lx.i
		c := s[start]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v':
			lx.i++
		case c == '-' && start+1 < len(s) && s[start+1] == '-':
			if j := strings.IndexByte(s[start:], '\n'); j >= 0 {
				lx.i = start + j + 1
			} else {
				lx.i = len(s)
			}
		case c == '/' && start+1 < len(s) && s[start+1] == '*':
			if !lx.skipComment() {
				return token{kind: tokBad, pos: start}
			}
		case c == '\'':
			if !lx.skipQuoted('\'', false) {
				return token{kind: tokBad, pos: start}
			}
			return token{kind: tokOther, text: s[start:lx.i], pos: start}
		case c == '"':
			if !lx.skipQuoted('"', false) {
				return token{kind: tokBad, pos: start}
			}
			return token{kind: tokOther, text: s[start:lx.i], pos: start}
		case (c == 'e' || c == 'E') && start+1 < len(s) && s[start+1] == '\'':
			lx.i++
			if !lx.skipQuoted('\'', true) {
				return token{kind: tokBad, pos: start}
			}
			return token{kind: tokOther, text: s[start:lx.i], pos: start}
		case isIdentStart(c):
			j := start + 1
			for j < len(s) && isIdentChar(s[j]) {
				j++
			}
			lx.i = j
			return token{kind: tokWord, text: s[start:j], pos: start}
		case c == '$':
			j := start + 1
			if j < len(s) && s[j] >= '0' && s[j] <= '9' {
				for j < len(s) && s[j] >= '0' && s[j] <= '9' {
					j++
				}
				lx.i = j
				if j < len(s) && isIdentChar(s[j]) {
					return token{kind: tokBad, pos: start} // $1abc: not SQL we know
				}
				return token{kind: tokParam, text: s[start:j], pos: start}
			}
			// A dollar-quoted string: $tag$ ... $tag$, the tag empty or an
			// identifier without '$'.
			for j < len(s) && isIdentChar(s[j]) && s[j] != '$' {
				j++
			}
			if j >= len(s) || s[j] != '$' || (j > start+1 && !isIdentStart(s[start+1])) {
				return token{kind: tokBad, pos: start}
			}
			delim := s[start : j+1]
			end := strings.Index(s[j+1:], delim)
			if end < 0 {
				return token{kind: tokBad, pos: start}
			}
			lx.i = j + 1 + end + len(delim)
			return token{kind: tokOther, text: s[start:lx.i], pos: start}
		case c >= '0' && c <= '9' || c == '.' && start+1 < len(s) && s[start+1] >= '0' && s[start+1] <= '9':
			j := start + 1
			for j < len(s) && (isIdentChar(s[j]) || s[j] == '.') {
				j++
			}
			lx.i = j
			return token{kind: tokOther, text: s[start:j], pos: start}
		default:
			lx.i++
			kind := tokOther
			switch c {
			case '(':
				kind = tokOpen
			case ')':
				kind = tokClose
			case ',':
				kind = tokComma
			case ';':
				kind = tokSemicolon
			}
			return token{kind: kind, text: s[start:lx.i], pos: start}
		}
	}
	return token{kind: tokEnd, pos: len(s)}
}

// skipComment skips a block comment at lx.i, nested ones included, and
// reports whether it ended.
func (lx *sqlLexer) skipComment() bool {
	s, depth := lx.s, 0
	for lx.i+1 < len(s) {
		switch {
		case s[lx.i] == '/' && s[lx.i+1] == '*':
			depth++
			lx.i += 2
		case s[lx.i] == '*' && s[lx.i+1] == '/':
			depth--
			lx.i += 2
			if depth == 0 {
				return true
			}
		default:
			lx.i++
		}
	}
	return false
}

// skipQuoted skips a string or quoted identifier that opens with q at
// lx.i (a doubled q stands for itself; with backslashes, a backslash
// escapes the next byte), and reports whether it ended.
func (lx *sqlLexer) skipQuoted(q byte, backslashes bool) bool {
	s := lx.s
	for j := lx.i + 1; j < len(s); j++ {
		switch {
		case backslashes && s[j] == '\\':
			j++
		case s[j] == q:
			if j+1 < len(s) && s[j+1] == q {
				j++
				continue
			}
			lx.i = j + 1
			return true
		}
	}
	return false
}
