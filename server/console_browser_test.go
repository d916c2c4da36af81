package server_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/internal/testsvc"
	"github.com/idem-run/idem/server"
)

// shipper is the browser test's function: it fails the record "poison"
// until fixed, and holds every record while held is closed over a gate,
// so that the test can see lag and in-flight records on the page.
type shipper struct {
	fixed    atomic.Bool
	mu       sync.Mutex
	gate     chan struct{} // nil: records pass
	poisoned atomic.Int64  // runs of "poison" that succeeded
}

func (s *shipper) HandleRecord(ctx context.Context, r *idem.Record) error {
	s.mu.Lock()
	gate := s.gate
	s.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if string(r.Data) == "poison" {
		if !s.fixed.Load() {
			return errors.New("cannot ship poison")
		}
		s.poisoned.Add(1)
	}
	return nil
}

// hold makes records wait until the returned function is called.
func (s *shipper) hold() (release func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	g := make(chan struct{})
	s.gate = g
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			if s.gate == g {
				s.gate = nil
			}
			close(g)
		})
	}
}

// TestConsoleBrowser opens the console in headless Chromium against a
// running idem with tokens: it enters the token, sees a mapping's shards,
// lag and counters appear and change as records are processed, pauses and
// resumes the mapping from the page, redrives an on-failure record from
// the page and sees it processed, and saves a screenshot (and, with
// IDEM_UPDATE_SCREENSHOT=1, docs/console.png).
func TestConsoleBrowser(t *testing.T) {
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		testsvc.Absent(t, "chromium is not installed (apt-get install chromium): %v", err)
	}
	ship := &shipper{}
	addr := serve(t, `
auth: {tokens: [`+token+`]}
streams:
  - {name: orders, shards: 4}
  - {name: clicks, shards: 2}
  - {name: orders-failed}
functions: [{name: ship}, {name: track}]
mappings:
  - name: ship-orders
    source: {stream: orders}
    function: ship
    startingPosition: TRIM_HORIZON
    maximumRetryAttempts: 0
    destinationConfig: {onFailure: {stream: orders-failed}}
  - {name: track-clicks, source: {stream: clicks}, function: track, startingPosition: TRIM_HORIZON}
  - {name: audit-clicks, source: {stream: clicks}, function: track, startingPosition: TRIM_HORIZON}
  - {name: export-clicks, source: {stream: clicks}, function: track, startingPosition: LATEST, enabled: false}
`, nil, server.WithHandler("ship", idem.RecordFunc(ship.HandleRecord)),
		server.WithHandler("track", idem.RecordFunc(func(context.Context, *idem.Record) error { return nil })))
	base := "http://" + addr

	put := func(stream string, data ...string) {
		t.Helper()
		var req server.PutRequest
		for i, d := range data {
			req.Records = append(req.Records, server.PutRecord{PartitionKey: fmt.Sprintf("key-%d-%s", i, d), Data: d})
		}
		b, _ := json.Marshal(req)
		if code, body := call(t, "POST", base+"/v1/streams/"+stream+"/records", "Bearer "+token, string(b)); code != 200 {
			t.Fatalf("put to %s: %d %s", stream, code, body)
		}
	}
	records := func(prefix string, n int) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = fmt.Sprintf("%s-%d", prefix, i)
		}
		return out
	}

	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(chromium), chromedp.NoSandbox, chromedp.Headless,
		chromedp.WindowSize(1680, 1050), chromedp.Flag("disable-gpu", true), chromedp.Flag("disable-dev-shm-usage", true))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	bctx, cancelBrowser := chromedp.NewContext(actx)
	defer cancelBrowser()
	ctx, cancel := context.WithTimeout(bctx, 3*time.Minute)
	defer cancel()

	// do runs steps, and fails the test saying what it was doing and what
	// the page showed.
	do := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, steps...); err != nil {
			page, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector("main") ? document.querySelector("main").innerText : ""`))
			t.Fatalf("%s: %v\nthe page shows:\n%s", what, err, page)
		}
	}
	// until waits for the JavaScript condition cond on the page.
	until := func(what, cond string) {
		t.Helper()
		do(what, func(ctx context.Context, tg *chromedp.Target) (chromedp.Void, error) {
			_, err := chromedp.Poll[bool](cond, chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(60*time.Second))(ctx, tg)
			return chromedp.Void{}, err
		})
	}
	row := `tr.mapping[data-mapping="ship-orders"]`
	cell := func(class string) string {
		return fmt.Sprintf(`(document.querySelector('%s td.%s') || {}).textContent`, row, class)
	}

	// Without the token the page says it needs one; with it, it shows the
	// mappings.
	do("opening the console", chromedp.Navigate(base+"/"), chromedp.WaitVisible(chromedp.CSS("#token")))
	until("the page asking for a token", `document.querySelector("#error").textContent.includes("needs a token")`)
	do("entering the token", chromedp.SendKeys(chromedp.CSS("#token"), token), chromedp.Click(chromedp.CSS("#token-save")))
	until("the mappings", `document.querySelectorAll("tr.mapping").length === 4`)
	until("ship-orders enabled with its 4 shards", cell("state")+` === "enabled" && `+
		fmt.Sprintf(`document.querySelector('%s').children[4].textContent.startsWith("4 (")`, row))
	until("export-clicks disabled", `document.querySelector('tr.mapping[data-mapping="export-clicks"] td.state').textContent === "disabled"`)

	// Counters change as records are processed.
	put("orders", records("order", 20)...)
	put("clicks", records("click", 7)...)
	until("20 processed", cell("processed")+` === "20"`)

	// Held records show as lag and in flight, then as processed.
	release := ship.hold()
	t.Cleanup(release) // before the server stops, should the test end here
	put("orders", records("late", 10)...)
	until("lag and in-flight records", cell("lag")+` !== "0" && `+cell("in-flight")+` !== "0"`)
	release()
	until("the lag drained and 30 processed", cell("lag")+` === "0" && `+cell("processed")+` === "30"`)

	// The shards, expanded: each with its checkpoint.
	do("expanding the shards", chromedp.Click(chromedp.CSS(row+" button.toggle")))
	until("4 shards with checkpoints", fmt.Sprintf(`(() => {
		const rows = document.querySelectorAll('tr.shards-row[data-mapping="ship-orders"] tr.shard');
		return rows.length === 4 && [...rows].every((r) => r.querySelector("td.checkpoint").textContent !== "");
	})()`))

	// Pause and resume from the page.
	do("pausing", chromedp.Click(chromedp.CSS(row+" button.pause")))
	until("ship-orders paused", cell("state")+` === "paused" && `+
		`[...document.querySelectorAll('tr.shards-row[data-mapping="ship-orders"] tr.shard')].every((r) => r.children[1].textContent === "paused")`)
	if st := status(t, addr); !mappingState(st, "ship-orders", "paused") {
		t.Fatalf("after the page paused ship-orders, the status says %+v", st.Mappings)
	}
	put("orders", records("resumed", 5)...)
	do("resuming", chromedp.Click(chromedp.CSS(row+" button.resume")))
	until("ship-orders enabled again and the records sent while paused processed", cell("state")+` === "enabled" && `+cell("processed")+` === "35"`)

	// A record the function fails goes to the on-failure destination; the
	// page shows it, and redrives it once the function is fixed.
	put("orders", "poison")
	until("the poison discarded", cell("discarded")+` === "1"`)
	ship.fixed.Store(true)
	do("showing the destination's records", chromedp.Click(chromedp.CSS("#dlq-reload")))
	until("the failed record with its metadata", `(() => {
		const f = [...document.querySelectorAll("#dlq-records .failure")].find((f) => f.textContent.includes("poison"));
		return !!f && f.querySelector(".meta").textContent.includes("RetryAttemptsExhausted") && f.querySelector(".meta").textContent.includes("cannot ship poison");
	})()`)

	var info server.ConsoleInfo
	if code, body := call(t, "GET", base+"/v1/console", "Bearer "+token, ""); code != 200 || json.Unmarshal([]byte(body), &info) != nil {
		t.Fatalf("GET /v1/console: %d %s", code, body)
	}
	if info.Redrive == "" {
		// The redrive route is another change's: this part runs once it
		// is there.
		t.Log("this idem has no redrive route: the redrive from the page is not tested")
	} else {
		do("a redrive dry run", chromedp.Click(chromedp.CSS("#redrive-dry")))
		until("the dry run's answer", `document.querySelector("#redrive-result").textContent.startsWith("Dry run: would send 1,")`)
		if ship.poisoned.Load() != 0 {
			t.Fatal("a dry run redrove the record")
		}
		do("redriving", chromedp.Click(chromedp.CSS("#redrive-send")),
			chromedp.WaitVisible(chromedp.CSS(`#redrive-send[data-armed]`)), chromedp.Click(chromedp.CSS("#redrive-send")))
		until("the redrive's answer", `document.querySelector("#redrive-result").textContent.startsWith("Redrove: sent 1,")`)
		until("the redriven record processed", cell("processed")+` === "36"`)
		if n := ship.poisoned.Load(); n != 1 {
			t.Fatalf("the redriven record ran %d times, want once", n)
		}
	}

	shot, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	file := filepath.Join(t.TempDir(), "console.png")
	if err := os.WriteFile(file, shot, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", file)
	if os.Getenv("IDEM_UPDATE_SCREENSHOT") == "1" {
		if err := os.WriteFile(filepath.Join("..", "docs", "console.png"), shot, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// mappingState reports whether st shows the mapping name in state.
func mappingState(st server.StatusResponse, name, state string) bool {
	for _, m := range st.Mappings {
		if m.Name == name {
			return m.State == state
		}
	}
	return false
}
