package engine

import (
	"encoding/json"
	"testing"
)

// TestStoredWindowFormats (issue 19, item 2): the stored window keeps the
// state's JSON exactly (HTML characters, spacing, numbers), and windows
// stored by the previous format (a state of strings, or null) still load.
func TestStoredWindowFormats(t *testing.T) {
	state := json.RawMessage(`{"1": 282, "s": "<&>", "o": {"a": [1, null]}}`)
	v := encodeStoredWindow(storedWindow{Start: 42, State: state})
	w, err := decodeStoredWindow(v)
	if err != nil || w.Start != 42 || string(w.State) != string(state) {
		t.Fatalf("round trip of %s: %d %s, %v", v, w.Start, w.State, err)
	}
	for stored, want := range map[string]string{
		`{"start":1767225600000000000,"state":{"sum":"15","n":"3"}}`: `{"sum":"15","n":"3"}`,
		`{"start":1767225600000000000,"state":null}`:                 ``,
		`{"start":1767225600000000000,"state":{}}`:                   `{}`,
	} {
		w, err := decodeStoredWindow([]byte(stored))
		if err != nil || w.Start != 1767225600000000000 || string(w.State) != want || (want == "") != (w.State == nil) {
			t.Errorf("%s: %d %s, %v; want state %q", stored, w.Start, w.State, err, want)
		}
	}
	if got := stateStrings(state); len(got) != 3 || got["1"] != "282" || got["s"] != "<&>" || got["o"] != `{"a": [1, null]}` {
		t.Errorf("stateStrings: %q", got)
	}
}
