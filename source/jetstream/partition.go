package jetstream

import (
	"errors"
	"fmt"
	"hash/fnv"
	"strings"
)

// Partition returns the partition, 0 to n-1, of subject under n-way
// subject-token partitioning, as WithSubjectTokenPartitioning computes it:
// the FNV-1a 32-bit hash of the subject's token at tokenIndex (1-based),
// modulo n. It is the number NATS' own subject mapping
// {{partition(n,k)}} computes when its k-th wildcard is that token, so a
// producer, a NATS mapping and idem agree on where a subject belongs.
// tokenIndex 0 hashes the whole subject, as the shorthand {{partition(n)}}
// does. A subject with fewer than tokenIndex tokens hashes the empty token.
// Partition panics if n < 1.
func Partition(subject string, tokenIndex, n int) int {
	if n < 1 {
		panic(fmt.Sprintf("jetstream: Partition with n = %d", n))
	}
	key := subject
	if tokenIndex > 0 {
		key = token(subject, tokenIndex)
	}
	h := fnv.New32a()
	h.Write([]byte(key))
	return int(h.Sum32() % uint32(n))
}

// token returns the i-th (1-based) token of subject, or "".
func token(subject string, i int) string {
	for ; i > 1; i-- {
		dot := strings.IndexByte(subject, '.')
		if dot < 0 {
			return ""
		}
		subject = subject[dot+1:]
	}
	if dot := strings.IndexByte(subject, '.'); dot >= 0 {
		return subject[:dot]
	}
	return subject
}

// validFilter reports why subject is not a valid subject filter: tokens
// are not empty and hold no whitespace, and ">" is only the last token.
func validFilter(subject string) error {
	if subject == "" {
		return errors.New("empty subject")
	}
	toks := strings.Split(subject, ".")
	for i, t := range toks {
		switch {
		case t == "":
			return fmt.Errorf("subject %q has an empty token", subject)
		case strings.ContainsAny(t, " \t\r\n"):
			return fmt.Errorf("subject %q holds whitespace", subject)
		case t == ">" && i != len(toks)-1:
			return fmt.Errorf("subject %q has \">\" before its last token", subject)
		case len(t) > 1 && strings.ContainsAny(t, "*>"):
			return fmt.Errorf("subject %q has a wildcard inside token %q", subject, t)
		}
	}
	return nil
}

// matchSubject reports whether the literal subject matches filter, with
// NATS' wildcards: "*" matches one token, a last ">" one or more.
func matchSubject(filter, subject string) bool {
	for {
		ft, frest, fmore := strings.Cut(filter, ".")
		st, srest, smore := strings.Cut(subject, ".")
		switch {
		case ft == ">":
			return true
		case ft != "*" && ft != st:
			return false
		case !fmore || !smore:
			return fmore == smore
		}
		filter, subject = frest, srest
	}
}

// overlap reports whether some subject matches both filters a and b.
func overlap(a, b string) bool {
	for {
		at, arest, amore := strings.Cut(a, ".")
		bt, brest, bmore := strings.Cut(b, ".")
		switch {
		case at == ">" || bt == ">":
			return true
		case at != "*" && bt != "*" && at != bt:
			return false
		case !amore || !bmore:
			return amore == bmore
		}
		a, b = arest, brest
	}
}
