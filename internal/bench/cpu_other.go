//go:build !unix

package bench

import "time"

// cpuTime is not measured here: scenarios report no CPU time.
func cpuTime() time.Duration { return 0 }
