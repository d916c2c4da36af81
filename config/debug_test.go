package config

import (
	"errors"
	"strings"
	"testing"
)

// TestDebugPprof accepts debug.pprof on a loopback address only.
func TestDebugPprof(t *testing.T) {
	for _, addr := range []string{"127.0.0.1:6060", "127.1.2.3:6060", "[::1]:6060", "localhost:6060", "127.0.0.1:0"} {
		f, err := Parse([]byte("debug: {pprof: '" + addr + "'}\n"))
		if err != nil {
			t.Errorf("%s: %v", addr, err)
			continue
		}
		if f.Debug == nil || f.Debug.Pprof != addr {
			t.Errorf("%s: Debug = %+v", addr, f.Debug)
		}
	}
	for _, yaml := range []string{"debug: {}\n", "debug: {pprof: ''}\n"} {
		if _, err := Parse([]byte(yaml)); err != nil {
			t.Errorf("%q: %v", yaml, err)
		}
	}
	for _, addr := range []string{"0.0.0.0:6060", ":6060", "[::]:6060", "10.0.0.1:6060", "example.com:6060", "127.0.0.1", "127.0.0.1:http", "127.0.0.1:70000"} {
		_, err := Parse([]byte("debug: {pprof: '" + addr + "'}\n"))
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Path != "debug.pprof" || !strings.HasPrefix(err.Error(), "debug.pprof: ") {
			t.Errorf("%s: Parse error %v, want one naming debug.pprof", addr, err)
		}
	}
}
