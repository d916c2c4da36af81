// Command idem runs event-driven functions over streams with exactly-once
// effects. See the README for the commands; `idem --help` lists them.
package main

import "github.com/idem-run/idem/cli"

func main() { cli.Main() }
