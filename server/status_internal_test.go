package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"

	"github.com/idem-run/idem/internal/pebbledb"
	"github.com/idem-run/idem/store"
)

// TestPutErrorStatus: a put's error is answered by its cause; a server's
// failure is never a 400.
func TestPutErrorStatus(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want int
	}{
		{fmt.Errorf("put: %w", pebbledb.ErrStreamNotFound), http.StatusNotFound},
		{fmt.Errorf("put: %w", pebbledb.ErrInvalidPartitionKey), http.StatusBadRequest},
		{fmt.Errorf("put: %w", pebbledb.ErrRecordTooLarge), http.StatusBadRequest},
		{fmt.Errorf("pebbledb: put to stream %q: %w", "s", store.ErrNoSpace), http.StatusInsufficientStorage},
		{pebbledb.ErrClosed, http.StatusServiceUnavailable},
		{context.Canceled, http.StatusServiceUnavailable},
		{errors.New("pebble: disk I/O error"), http.StatusInternalServerError},
	} {
		if got := putErrorStatus(tc.err); got != tc.want {
			t.Errorf("putErrorStatus(%v) = %d, want %d", tc.err, got, tc.want)
		}
	}
}
