// Package e2e holds idem's end-to-end tests. They build the real binaries
// (cmd/idem and examples/counter) once per test binary, run `idem serve` as
// a child process on a free port with its configuration and data directory
// in a temporary directory, and drive it through the command line and the
// HTTP API: crashes with SIGKILL, clean stops with SIGTERM, replays under a
// new mapping name, bad configurations and on-failure destinations.
//
// The package has no code outside its tests.
package e2e
