package cli

import (
	"bytes"
	"context"
	"testing"

	"github.com/idem-run/idem/config/schema"
)

func TestConfigSchema(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := Run(context.Background(), []string{"config", "schema"}, nil, &stdout, &stderr); code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	want, err := schema.Generate()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(stdout.Bytes(), want) {
		t.Errorf("idem config schema printed %d bytes, not schema.Generate()'s %d", stdout.Len(), len(want))
	}
	if code := Run(context.Background(), []string{"config", "schema", "extra"}, nil, &stdout, &stderr); code != exitUsage {
		t.Errorf("an extra argument: exit %d, want %d", code, exitUsage)
	}
}
