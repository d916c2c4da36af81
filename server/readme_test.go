package server_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/idem-run/idem/config"
	"github.com/idem-run/idem/server"
)

// yamlBlock finds the README's ```yaml blocks.
var yamlBlock = regexp.MustCompile("(?s)```yaml\n(.*?)```")

// TestREADMEConfigs: every configuration the README shows passes the
// checks of a plain `idem serve` (no Go handler registered), as shown,
// given the environment and files it names: IDEM_TOKEN set, and an
// executable ./bootstrap for a process function.
func TestREADMEConfigs(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := yamlBlock.FindAllSubmatchIndex(readme, -1)
	if len(blocks) == 0 {
		t.Fatal("README.md has no ```yaml blocks")
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "bootstrap"), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Chdir(dir)
	env := map[string]string{"IDEM_TOKEN": strings.Repeat("0123456789abcdef", 4)}
	lookup := func(name string) (string, bool) { v, ok := env[name]; return v, ok }
	for _, b := range blocks {
		block := readme[b[2]:b[3]]
		line := 1 + strings.Count(string(readme[:b[2]]), "\n")
		cfg, err := config.ParseWithEnv(block, lookup)
		if err == nil {
			err = server.Check(cfg)
		}
		if err != nil {
			t.Errorf("README.md:%d: the configuration fails `idem serve`'s checks:\n%v", line, err)
		}
	}
}
