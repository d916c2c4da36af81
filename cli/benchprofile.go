package cli

import (
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
)

// benchProfiles are `idem bench --cpuprofile` and `--mutexprofile`: the
// run's CPU profile, and where goroutines waited for locks, for `go tool
// pprof`. Finding what stops throughput from growing with cores starts
// there: a lock held across shards shows in the mutex profile.
type benchProfiles struct {
	cpu, mutex string
	cpuFile    *os.File
	prevMutex  int
}

// start creates the CPU profile's file and starts both profiles; a file
// that cannot be created is an error before any scenario runs.
func (p *benchProfiles) start() error {
	if p.cpu != "" {
		f, err := os.Create(p.cpu)
		if err != nil {
			return fmt.Errorf("--cpuprofile: %w", err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			f.Close()
			return fmt.Errorf("--cpuprofile: %w", err)
		}
		p.cpuFile = f
	}
	if p.mutex != "" {
		// Check the path now rather than after minutes of scenarios.
		f, err := os.Create(p.mutex)
		if err != nil {
			p.stopCPU()
			return fmt.Errorf("--mutexprofile: %w", err)
		}
		f.Close()
		p.prevMutex = runtime.SetMutexProfileFraction(5)
	}
	return nil
}

func (p *benchProfiles) stopCPU() error {
	if p.cpuFile == nil {
		return nil
	}
	pprof.StopCPUProfile()
	err := p.cpuFile.Close()
	p.cpuFile = nil
	if err != nil {
		return fmt.Errorf("--cpuprofile: %w", err)
	}
	return nil
}

// stop ends the profiles and writes the mutex profile.
func (p *benchProfiles) stop() error {
	err := p.stopCPU()
	if p.mutex == "" {
		return err
	}
	runtime.SetMutexProfileFraction(p.prevMutex)
	f, ferr := os.Create(p.mutex)
	if ferr != nil {
		return fmt.Errorf("--mutexprofile: %w", ferr)
	}
	if werr := pprof.Lookup("mutex").WriteTo(f, 0); werr != nil {
		f.Close()
		return fmt.Errorf("--mutexprofile: %w", werr)
	}
	if cerr := f.Close(); cerr != nil {
		return fmt.Errorf("--mutexprofile: %w", cerr)
	}
	return err
}
