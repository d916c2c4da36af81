package testsvc

import (
	"os"
	"os/exec"
	"testing"
)

// Tmpfs mounts a tmpfs of size (mount's size= syntax, such as "48m") on a
// temporary directory for the test's life, and returns the directory: a
// real filesystem small enough to fill. Mounting needs root; without it,
// or without mount, the test is Absent.
func Tmpfs(t testing.TB, size string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		Absent(t, "a tmpfs cannot be mounted: not root")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput(); err != nil {
		Absent(t, "a tmpfs cannot be mounted: mount: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return dir
}
