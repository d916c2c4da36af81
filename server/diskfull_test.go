package server_test

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/idem-run/idem/internal/testsvc"
)

// TestDiskFullAnswers507 fills the real, small filesystem that holds the
// data directory (a tmpfs, which needs root to mount): a put answers 507
// saying the disk is full, at once and without hanging, /readyz fails,
// and both recover on their own once space is freed. Without root or
// mount it skips, except under CI=true, where it fails.
func TestDiskFullAnswers507(t *testing.T) {
	mnt := testsvc.Tmpfs(t, "160m")
	addr, _ := start(t, filepath.Join(mnt, "data"), "127.0.0.1:0", "streams: [{name: events}]\n", nil)
	put := func() (int, string) {
		return call(t, "POST", "http://"+addr+"/v1/streams/events/records", "", `{"records":[{"partitionKey":"k","data":"d"}]}`)
	}
	if code, body := put(); code != 200 {
		t.Fatalf("put with space: %d %s", code, body)
	}

	// Leave 32 MiB free, below the embedded store's 64 MiB reserve.
	var st syscall.Statfs_t
	if err := syscall.Statfs(mnt, &st); err != nil {
		t.Fatal(err)
	}
	free := int64(st.Bavail) * int64(st.Bsize)
	ballast := filepath.Join(mnt, "ballast")
	if err := os.WriteFile(ballast, make([]byte, free-32<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	var code int
	var body string
	eventually(t, "a put refused for the full disk", func() bool { code, body = put(); return code != 200 })
	if code != 507 || !strings.Contains(body, "disk holding idem's data is full") {
		t.Fatalf("put on a full disk: %d %s, want 507 saying the disk is full", code, body)
	}
	if code, body := call(t, "GET", "http://"+addr+"/readyz", "", ""); code != 503 {
		t.Errorf("readyz on a full disk: %d %s, want 503", code, body)
	}

	if err := os.Remove(ballast); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a put once space is freed", func() bool { code, body = put(); return code == 200 })
	eventually(t, "ready once space is freed", func() bool {
		code, _ := call(t, "GET", "http://"+addr+"/readyz", "", "")
		return code == 200
	})
}
