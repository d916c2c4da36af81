package postgres

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// PostgreSQL text holds valid UTF-8 without NUL bytes, but idem's names and
// keys are Go strings, any bytes. escape maps every Go string to text
// injectively, and leaves the usual string (valid UTF-8, no NUL, no
// backslash) as it is, so that tables stay readable and queryable by hand:
//
//	\      →  \\
//	NUL    →  \0
//	a byte of invalid UTF-8  →  \xHH (two lowercase hex digits)
func escape(s string) string {
	if utf8.ValidString(s) && strings.IndexByte(s, 0) < 0 && strings.IndexByte(s, '\\') < 0 {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 8)
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == '\\':
			b.WriteString(`\\`)
		case c == 0:
			b.WriteString(`\0`)
		case c < utf8.RuneSelf:
			b.WriteByte(c)
		default:
			r, size := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && size == 1 {
				const hex = "0123456789abcdef"
				b.WriteString(`\x`)
				b.WriteByte(hex[c>>4])
				b.WriteByte(hex[c&0xf])
			} else {
				b.WriteString(s[i : i+size])
			}
			i += size
			continue
		}
		i++
	}
	return b.String()
}

var errBadEscape = errors.New("bad escape")

// unescape reverses escape.
func unescape(s string) (string, error) {
	if strings.IndexByte(s, '\\') < 0 {
		return s, nil
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '\\' {
			b.WriteByte(c)
			continue
		}
		if i+1 >= len(s) {
			return "", fmt.Errorf("%w at the end of %q", errBadEscape, s)
		}
		switch s[i+1] {
		case '\\':
			b.WriteByte('\\')
			i++
		case '0':
			b.WriteByte(0)
			i++
		case 'x':
			if i+3 >= len(s) {
				return "", fmt.Errorf("%w at byte %d of %q", errBadEscape, i, s)
			}
			hi, ok1 := unhex(s[i+2])
			lo, ok2 := unhex(s[i+3])
			if !ok1 || !ok2 {
				return "", fmt.Errorf("%w at byte %d of %q", errBadEscape, i, s)
			}
			b.WriteByte(hi<<4 | lo)
			i += 3
		default:
			return "", fmt.Errorf("%w at byte %d of %q", errBadEscape, i, s)
		}
	}
	return b.String(), nil
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}
