package e2e

import (
	"fmt"
	"net"
	"path/filepath"
	"testing"
	"time"
)

// TestSIGTERMWithFreshConnection stops `idem serve` with SIGTERM while a
// client holds a connection on which it has sent no request yet, as Go's HTTP
// transport leaves behind when it dials for a request that another
// connection then serves, or as a browser's preconnect or a TCP health check
// does. net/http's Shutdown counts such a connection as busy for its first
// five seconds, longer than serve's grace period; serve must still exit 0
// (README: SIGINT or SIGTERM drain in-flight batches and exit 0).
func TestSIGTERMWithFreshConnection(t *testing.T) {
	idemBin, _ := binaries(t)
	dir := t.TempDir()
	addr := freeAddr(t)
	cfg := filepath.Join(dir, "idem.yaml")
	writeFile(t, cfg, fmt.Sprintf("dataDir: %q\nlisten: %s\nstreams:\n  - {name: orders}\n", filepath.Join(dir, "idem-data"), addr))
	srv := startServe(t, idemBin, cfg, addr)
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	start := time.Now()
	if code := srv.stop(t); code != 0 {
		t.Errorf("serve exited with %d after SIGTERM, want 0\n%s", code, srv.tail(20))
	}
	t.Logf("serve exited %v after SIGTERM", time.Since(start).Round(time.Millisecond))
}
