package engine_test

import (
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/idem-run/idem/engine"
	"github.com/idem-run/idem/function"
	"github.com/idem-run/idem/source"
)

// TestPlainStringResponse (issue 19, item 1): AWS's blueprints answer a
// batch with a plain string. Without ReportBatchItemFailures Lambda does
// not read the answer, and the batch succeeded; with it, an answer it
// cannot read fails the whole batch. Through an HTTP function and an
// unmodified aws-lambda-go function run as a process.
func TestPlainStringResponse(t *testing.T) {
	kinds := map[string]func(t *testing.T) function.Driver{
		"http": func(t *testing.T) function.Driver {
			return httpFunction(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				io.Copy(io.Discard, r.Body)
				fmt.Fprint(w, `"Successfully processed 3 records."`)
			}))
		},
		"process": func(t *testing.T) function.Driver {
			return lambdaProcess(t, "blueprint", nil)
		},
	}
	for name, open := range kinds {
		t.Run(name, func(t *testing.T) {
			fn := open(t)
			for _, rbif := range []bool{false, true} {
				t.Run(fmt.Sprintf("ReportBatchItemFailures=%v", rbif), func(t *testing.T) {
					v := newEnv(t)
					v.stream("in", 1)
					v.put("in", "k", "a", "b", "c")
					m := engine.Mapping{Name: "m", Stream: "in", Source: v.source("in"), Function: "blueprint", Invoker: fn,
						StartingPosition: source.TrimHorizon, ReportBatchItemFailures: rbif,
						RetryBaseDelay: time.Millisecond, RetryMaxDelay: time.Millisecond}
					m.RetryAttempts(0)
					e, _ := v.run(m)
					waitFor(t, "3 records resolved", func() bool { st := totals(e); return st.Processed+st.Discarded == 3 })
					st := totals(e)
					if !rbif && (st.Processed != 3 || st.Invocations != 1) {
						t.Errorf("without ReportBatchItemFailures: processed %d in %d invocations, want 3 in 1", st.Processed, st.Invocations)
					}
					if rbif && st.Discarded != 3 {
						t.Errorf("with ReportBatchItemFailures: discarded %d, want 3 (an unreadable answer fails the batch)", st.Discarded)
					}
				})
			}
		})
	}
}
