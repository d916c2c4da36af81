package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"runtime"
	"strings"
	"testing"

	"github.com/idem-run/idem/internal/buildinfo"
)

// TestVersion (issue 16, item 5): `idem version` prints the module
// version, the VCS revision and the Go version the binary was built
// with, as text and as JSON.
func TestVersion(t *testing.T) {
	bi := buildinfo.Read()
	if bi.GoVersion != runtime.Version() || bi.Version == "" || bi.Revision == "" {
		t.Fatalf("buildinfo.Read() = %+v", bi)
	}
	var stdout, stderr bytes.Buffer
	if code := Run(context.Background(), []string{"version"}, nil, &stdout, &stderr); code != exitOK {
		t.Fatalf("idem version: exit %d: %s", code, stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	rev := bi.Revision
	if bi.Modified {
		rev += " (modified)"
	}
	want := []string{"idem " + bi.Version, "revision " + rev, "built with " + runtime.Version()}
	if strings.Join(lines, "\n") != strings.Join(want, "\n") {
		t.Errorf("idem version printed\n%s\nwant\n%s", stdout.String(), strings.Join(want, "\n"))
	}

	stdout.Reset()
	if code := Run(context.Background(), []string{"version", "--json"}, nil, &stdout, &stderr); code != exitOK {
		t.Fatalf("idem version --json: exit %d: %s", code, stderr.String())
	}
	var got struct {
		Version, Revision, GoVersion string
		Modified                     bool
	}
	if err := json.Unmarshal(stdout.Bytes(), &got); err != nil {
		t.Fatalf("%v: %s", err, stdout.String())
	}
	if got.Version != bi.Version || got.Revision != bi.Revision || got.GoVersion != runtime.Version() || got.Modified != bi.Modified {
		t.Errorf("idem version --json: %s, want %+v", stdout.String(), bi)
	}

	if code := Run(context.Background(), []string{"version", "extra"}, nil, &stdout, &stderr); code != exitUsage {
		t.Errorf("idem version extra: exit %d, want %d", code, exitUsage)
	}
}
