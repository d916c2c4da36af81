package testsvc

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// NodeDir returns the absolute path of function/process/testdata/node,
// whose functions run under the official Node.js runtime interface client,
// aws-lambda-ric (.ci/run installs it with npm); the test is Absent when
// node or the client is missing.
func NodeDir(tb testing.TB) string {
	tb.Helper()
	if _, err := exec.LookPath("node"); err != nil {
		Absent(tb, "node is not installed: the Node.js runtime tests need it")
	}
	dir := filepath.Join(moduleRoot(tb), "function", "process", "testdata", "node")
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "aws-lambda-ric", "dist", "rapid-client.node")); err != nil {
		Absent(tb, "aws-lambda-ric is not installed (run npm ci in %s, as .ci/run does): %v", dir, err)
	}
	return dir
}

// moduleRoot returns the repository's root: the nearest directory above the
// test's working directory (its package's) that holds go.mod.
func moduleRoot(tb testing.TB) string {
	tb.Helper()
	dir, err := os.Getwd()
	if err != nil {
		tb.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			tb.Fatal("testsvc: no go.mod above the test's directory")
		}
		dir = parent
	}
}
