package postgres

import (
	"errors"

	"github.com/jackc/pgx/v5/pgconn"
)

// The SQLSTATEs of a transaction that lost a race with another one rather
// than failed: run again, the same work succeeds.
const (
	codeSerialization = "40001" // serialization_failure
	codeDeadlock      = "40P01" // deadlock_detected
	codeLockTimeout   = "55P03" // lock_not_available: lock_timeout, or NOWAIT
)

// IsConflict reports whether err, or an error it wraps, is PostgreSQL's
// verdict on a transaction that conflicted with another one: a deadlock
// (SQLSTATE 40P01), a serialization failure (40001), or a lock wait that
// outlasted lock_timeout (55P03; see WithLeaseTTL). Such a failure says
// nothing about the record: the same batch run again, once the other
// transaction has ended, succeeds. The engine retries a batch whose
// handler returned such an error (wrapped with %w, as TxFrom's example
// does) after a short jittered wait, without counting it against the
// mapping's maximumRetryAttempts and without bisecting the batch.
func IsConflict(err error) bool {
	pe, ok := errors.AsType[*pgconn.PgError](err)
	if !ok {
		return false
	}
	switch pe.Code {
	case codeSerialization, codeDeadlock, codeLockTimeout:
		return true
	}
	return false
}

// IsConflict reports whether err is a conflict between transactions (the
// package's IsConflict), for the engine, which retries the batch that
// failed with it.
func (s *Store) IsConflict(err error) bool { return IsConflict(err) }
