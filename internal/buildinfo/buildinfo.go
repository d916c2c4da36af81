// Package buildinfo tells what idem was built from, as the Go toolchain
// recorded it in the binary: for `idem version`, the idem_build_info
// metric and the service.version of idem's traces, so that an operator
// can tell which build is running without a version baked in by hand.
package buildinfo

import (
	"runtime"
	"runtime/debug"
)

// modulePath is idem's module: a program that embeds idem (cli.Main with
// its own handlers) is another main module, and idem one of its
// dependencies.
const modulePath = "github.com/idem-run/idem"

// Info is what the binary says it was built from.
type Info struct {
	// Version is idem's module version: a release tag, a pseudo-version,
	// or "(devel)" for a build from a working tree without one.
	Version string
	// Revision is the VCS revision of the build's main module, and
	// Modified whether its working tree had changes; "unknown" when the
	// toolchain did not record it (go build -buildvcs=false, go run, or
	// idem as a dependency, whose version names its revision).
	Revision string
	Modified bool
	// GoVersion is the Go toolchain that built it (runtime.Version).
	GoVersion string
}

// Read returns the running binary's Info.
func Read() Info {
	info := Info{Version: "(devel)", Revision: "unknown", GoVersion: runtime.Version()}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return info
	}
	mod := &bi.Main
	if mod.Path != modulePath {
		mod = nil
		for _, d := range bi.Deps {
			if d.Path == modulePath {
				mod = d
				if d.Replace != nil {
					mod = d.Replace
				}
				break
			}
		}
	}
	if mod != nil && mod.Version != "" {
		info.Version = mod.Version
	}
	if mod == &bi.Main {
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				info.Revision = s.Value
			case "vcs.modified":
				info.Modified = s.Value == "true"
			}
		}
	}
	return info
}
