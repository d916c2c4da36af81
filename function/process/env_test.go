package process

import (
	"encoding/json"
	"errors"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"testing"
	"time"
)

// environOf starts the environ test function with cfg and returns the
// environment its first process saw.
func environOf(t *testing.T, cfg Config) (*Function, map[string]string) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "environ.json")
	cfg.Args = []string{out}
	f, _ := start(t, "environ", cfg)
	deadline := time.Now().Add(30 * time.Second)
	for {
		b, err := os.ReadFile(out)
		if err == nil {
			var env map[string]string
			if err := json.Unmarshal(b, &env); err != nil {
				t.Fatal(err)
			}
			return f, env
		}
		if !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatal("the function never wrote its environment")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestEnvironment(t *testing.T) {
	t.Setenv("IDEM_TOKEN", "secret-token") // idem's secrets
	t.Setenv("AWS_SECRET_ACCESS_KEY", "secret-key")
	t.Setenv("LD_LIBRARY_PATH", "/host/lib")
	t.Setenv("_LAMBDA_SERVER_PORT", "9001") // never passed on
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Name: "env-fn", MemorySize: 256, Region: "eu-west-1",
		Env: map[string]string{"TABLE_NAME": "orders", "TZ": "Europe/Paris"}}

	// Lambda's variables and Env, and nothing else.
	_, env := environOf(t, cfg)
	bin := binary(t, "environ")
	want := map[string]string{
		"AWS_LAMBDA_FUNCTION_NAME":        "env-fn",
		"AWS_LAMBDA_FUNCTION_VERSION":     "$LATEST",
		"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
		"AWS_LAMBDA_INITIALIZATION_TYPE":  "on-demand",
		"AWS_LAMBDA_LOG_GROUP_NAME":       "/aws/lambda/env-fn",
		"AWS_REGION":                      "eu-west-1",
		"AWS_DEFAULT_REGION":              "eu-west-1",
		"_HANDLER":                        "environ",
		"LAMBDA_TASK_ROOT":                wd,
		"LAMBDA_RUNTIME_DIR":              filepath.Dir(bin),
		"PATH":                            os.Getenv("PATH"),
		"LANG":                            "en_US.UTF-8",
		"LD_LIBRARY_PATH":                 "/host/lib:" + wd + ":" + filepath.Join(wd, "lib"),
		"TZ":                              "Europe/Paris",
		"TABLE_NAME":                      "orders",
	}
	if api := env["AWS_LAMBDA_RUNTIME_API"]; !regexp.MustCompile(`^127\.0\.0\.1:[1-9][0-9]*$`).MatchString(api) {
		t.Errorf("AWS_LAMBDA_RUNTIME_API = %q, want 127.0.0.1:PORT", api)
	}
	delete(env, "AWS_LAMBDA_RUNTIME_API")
	stream := env["AWS_LAMBDA_LOG_STREAM_NAME"]
	if !regexp.MustCompile(`^\d{4}/\d\d/\d\d/\[\$LATEST\][0-9a-f]{32}$`).MatchString(stream) {
		t.Errorf("AWS_LAMBDA_LOG_STREAM_NAME = %q, want Lambda's form", stream)
	}
	delete(env, "AWS_LAMBDA_LOG_STREAM_NAME")
	if !maps.Equal(env, want) {
		for _, k := range slices.Sorted(maps.Keys(env)) {
			if v, ok := want[k]; !ok || v != env[k] {
				t.Errorf("%s = %q, want %q (set: %t)", k, env[k], v, ok)
			}
		}
		for _, k := range slices.Sorted(maps.Keys(want)) {
			if _, ok := env[k]; !ok {
				t.Errorf("%s missing, want %q", k, want[k])
			}
		}
	}

	// With InheritEnv, idem's environment too, below Env and Lambda's.
	cfg.InheritEnv = true
	_, env = environOf(t, cfg)
	for k, v := range map[string]string{"IDEM_TOKEN": "secret-token", "AWS_SECRET_ACCESS_KEY": "secret-key",
		"TABLE_NAME": "orders", "TZ": "Europe/Paris", "LD_LIBRARY_PATH": "/host/lib", "AWS_REGION": "eu-west-1",
		"AWS_LAMBDA_FUNCTION_NAME": "env-fn", "LANG": cmpOr(os.Getenv("LANG"), "en_US.UTF-8")} {
		if env[k] != v {
			t.Errorf("with InheritEnv, %s = %q, want %q", k, env[k], v)
		}
	}
	if v, ok := env["_LAMBDA_SERVER_PORT"]; ok {
		t.Errorf("with InheritEnv, _LAMBDA_SERVER_PORT = %q reached the process", v)
	}
}
