package process

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/idem-run/idem/function"
)

// invocation is one batch on its way to a process and back.
type invocation struct {
	id    string
	event *eventBuf
	done  chan struct{}
	// raw keeps the answer verbatim in payload (InvokePayload) instead of
	// reading it as a batch response; clientContext is sent as
	// Lambda-Runtime-Client-Context. Both are set before the invocation is
	// handed over.
	raw           bool
	clientContext []byte
	// traceID is the invoker's span as an X-Ray trace header, sent as
	// Lambda-Runtime-Trace-Id; "" when not traced (xrayTraceID).
	traceID string

	// Set by the instance that takes it, under its mu; read by Invoke once
	// done is closed.
	inst        *instance
	start       time.Time // when the process received it
	end         time.Time // when it finished
	deadline    time.Time
	timer       *time.Timer
	finished    bool
	undelivered bool // finished without any process seeing it
	res         function.Result
	err         error
	payload     []byte // the verbatim answer of a raw invocation
}

// instance is one run of one process. A process that exits is replaced by
// a new instance, with a new number and a new Runtime API listener.
type instance struct {
	f        *Function
	id       string // its number, in logs and its pid file
	ln       *instanceListener
	cmd      *exec.Cmd
	pidFile  string // its pid file; "" for none
	started  time.Time
	exited   chan struct{} // closed once the process has exited
	waitErr  error         // how it exited; read after exited is closed
	shutdown chan struct{} // closed when the function closes: SHUTDOWN for extensions
	reqID    atomic.Pointer[string]

	mu         sync.Mutex
	cur        *invocation // the invocation it is running, unfinished
	ready      bool        // it asked for an invocation at least once
	dead       bool
	healthy    bool   // it answered an invocation successfully
	killReason string // why idem killed it, if it did
	timedOut   bool   // idem killed it for a timeout
	peak       int64  // its peak memory as last read, in bytes
	initErr    *function.Error
	extensions map[string]bool
}

// supervise keeps one process slot filled until Close: it starts a
// process, waits for it to exit, and starts another after a backoff.
func (f *Function) supervise(slot int) {
	defer f.supervisors.Done()
	failures := 0
	for restart, crashed := false, false; ; restart = true {
		inst, err := f.start(restart, crashed)
		healthy, timedOut := false, false
		switch {
		case err != nil:
			f.startFailed(err)
		case inst == nil:
			return // closing
		default:
			healthy, timedOut = f.await(inst)
		}
		if f.isClosed() {
			return
		}
		crashed = !timedOut
		if timedOut {
			// idem ended it, as Lambda ends a sandbox whose invocation
			// timed out, and the next invocation needs a process now.
			failures = 0
			f.log.Info("restarting process", "slot", slot, "in", time.Duration(0))
			continue
		}
		if healthy {
			failures = 0
		}
		failures++
		delay := backoff(failures)
		f.log.Info("restarting process", "slot", slot, "in", delay)
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-f.closing:
			t.Stop()
			return
		}
	}
}

// backoff is the delay before the n-th consecutive restart: 100ms, doubling,
// at most 30s.
func backoff(n int) time.Duration {
	d := minBackoff
	for i := 1; i < n && d < maxBackoff; i++ {
		d *= 2
	}
	return min(d, maxBackoff)
}

func (f *Function) isClosed() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.closed
}

// start starts a process, or returns nil, nil once Close has begun. It
// holds f.mu while it starts the process, so that Close cannot miss it. A
// restart after a crash counts towards a crash loop.
func (f *Function) start(restart, crashed bool) (*instance, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return nil, nil
	}
	if restart {
		f.restarts++
		if crashed {
			now := time.Now()
			f.pruneRecent(now)
			f.recent = append(f.recent, now)
		}
	}
	f.lastID++
	id := strconv.FormatUint(f.lastID, 10)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("process: listening for the Runtime API: %w", err)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		_ = ln.Close()
		return nil, fmt.Errorf("process: creating the stdout pipe: %w", err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		_ = ln.Close()
		_ = outR.Close()
		_ = outW.Close()
		return nil, fmt.Errorf("process: creating the stderr pipe: %w", err)
	}
	cmd := &exec.Cmd{
		Path: f.path,
		Args: append([]string{f.cfg.Command}, f.cfg.Args...),
		Env: append(slices.Clip(f.env),
			"AWS_LAMBDA_RUNTIME_API="+ln.Addr().String(),
			"AWS_LAMBDA_LOG_STREAM_NAME="+logStreamName(time.Now())),
		Dir:         f.dir,
		Stdout:      outW,
		Stderr:      errW,
		SysProcAttr: sysProcAttr(),
	}
	inst := &instance{
		f:          f,
		id:         id,
		cmd:        cmd,
		exited:     make(chan struct{}),
		shutdown:   make(chan struct{}),
		extensions: make(map[string]bool),
	}
	inst.ln = &instanceListener{Listener: ln, inst: inst, conns: make(map[*instanceConn]struct{})}
	if f.pidDir != "" {
		inst.pidFile = filepath.Join(f.pidDir, f.cfg.Name+"-"+id+".pid")
	}
	started := make(chan error, 1)
	f.tasks.Add(1)
	go inst.run(started, outR, errR)
	err = <-started
	_ = outW.Close() // the child has its copies
	_ = errW.Close()
	if err != nil {
		_ = ln.Close()
		_ = outR.Close()
		_ = errR.Close()
		return nil, fmt.Errorf("process: starting %s: %w", f.path, err)
	}
	inst.started = time.Now()
	f.instances[id] = inst
	f.log.Debug("process started", "pid", cmd.Process.Pid, "process", id, "runtimeAPI", ln.Addr().String())
	f.tasks.Add(3)
	go inst.pipe(outR, "stdout")
	go inst.pipe(errR, "stderr")
	// Served only now that the pid is known: the listener checks that
	// connections come from the process. The kernel queues them until then.
	go func() {
		defer f.tasks.Done()
		_ = f.srv.Serve(inst.ln) // ends when the process exits, or Close
	}()
	return inst, nil
}

// run starts the process, reports how on started, and, once it started,
// waits for it to exit and closes inst.exited.
//
// It keeps its goroutine on one OS thread from start to exit: on Linux the
// kernel kills the process when the thread that started it ends (see
// sysProcAttr), and the Go runtime ends a thread when a goroutine locked
// to it exits. Locked, the thread cannot end before the process has been
// waited for, and after that the signal no longer matters. Wait blocks the
// thread anyway, so the lock costs no thread of its own.
func (inst *instance) run(started chan<- error, outR, errR *os.File) {
	f := inst.f
	defer f.tasks.Done()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := inst.cmd.Start(); err != nil {
		started <- err
		return
	}
	if inst.pidFile != "" {
		err := writePIDFile(inst.pidFile, inst.cmd.Process.Pid)
		if err != nil && !errors.Is(err, errNoStartTime) { // no pid files off Linux
			f.log.Warn("cannot write the process's pid file", "process", inst.id, "err", err)
		}
	}
	started <- nil
	inst.waitErr = inst.cmd.Wait()
	// What the process started dies with it, as with Lambda's sandbox;
	// and the log pipes then reach their end.
	signalGroup(inst.cmd.Process, sigKill)
	if inst.pidFile != "" {
		if err := os.Remove(inst.pidFile); err != nil && !errors.Is(err, os.ErrNotExist) {
			f.log.Warn("cannot remove the process's pid file", "process", inst.id, "err", err)
		}
	}
	close(inst.exited)
	inst.ln.closeAll()
	deadline := time.Now().Add(time.Second) // for a descendant that escaped the group
	_ = outR.SetReadDeadline(deadline)
	_ = errR.SetReadDeadline(deadline)
}

// startFailed records a process that could not be started at all, and
// fails the invocations waiting for one.
func (f *Function) startFailed(err error) {
	f.log.Error("cannot start process", "err", err)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lastExit, f.lastExitAt = err.Error(), time.Now()
	f.failInitLocked(&function.Error{Type: TypeInvalidEntrypoint, Message: err.Error(), Err: err})
}

// failInitLocked fails the invocations waiting for a process with fe. f.mu
// is held.
func (f *Function) failInitLocked(fe *function.Error) {
	f.initErr = fe
	close(f.initFailed)
	f.initFailed = make(chan struct{})
}

// await waits for inst to exit (stopping it if the function closes), fails
// its invocation if it was running one, and records the exit. It reports
// whether the process was healthy (it answered an invocation successfully
// or stayed up a minute), and whether idem killed it for a timeout.
func (f *Function) await(inst *instance) (healthy, timedOut bool) {
	select {
	case <-inst.exited:
	case <-f.closing:
		inst.stop()
	}
	closing := f.isClosed()
	desc := exitDescription(inst.waitErr)

	inst.mu.Lock()
	inst.dead = true
	if inst.killReason != "" {
		desc += " (" + inst.killReason + ")"
	}
	ready, initErr := inst.ready, inst.initErr
	healthy, timedOut = inst.healthy, inst.timedOut
	var reqID string
	if cur := inst.cur; cur != nil {
		reqID = cur.id
		inst.cur = nil
		fe := exitError(inst.waitErr)
		if closing {
			fe.Message += " (the function was closed)"
			fe.Err = ErrClosed
			if inst.waitErr != nil {
				fe.Err = fmt.Errorf("%w: %w", ErrClosed, inst.waitErr)
			}
		}
		inst.finishLocked(cur, function.Result{}, fe)
	}
	inst.mu.Unlock()

	f.mu.Lock()
	delete(f.instances, inst.id)
	f.lastExit, f.lastExitAt = desc, time.Now()
	if !ready && !closing {
		fe := initErr
		if fe == nil {
			fe = exitError(inst.waitErr)
			fe.Message += " during initialization"
		}
		f.failInitLocked(fe)
	}
	f.mu.Unlock()

	attrs := []any{"pid", inst.cmd.Process.Pid, "process", inst.id, "exit", desc}
	switch {
	case closing:
		f.log.Debug("process stopped", attrs...)
	case reqID != "":
		f.log.Warn("process exited during an invocation", append(attrs, "requestId", reqID)...)
	case !ready:
		f.log.Warn("process exited during initialization", attrs...)
	default:
		f.log.Warn("process exited", attrs...)
	}
	return healthy || time.Since(inst.started) >= healthyAfter, timedOut && !closing
}

// stop ends the process as Lambda ends a sandbox: a SHUTDOWN event for its
// extensions and SIGTERM, then SIGKILL after the grace period.
func (inst *instance) stop() {
	close(inst.shutdown)
	signalGroup(inst.cmd.Process, sigTerm)
	t := time.NewTimer(stopGrace)
	defer t.Stop()
	select {
	case <-inst.exited:
	case <-t.C:
		signalGroup(inst.cmd.Process, sigKill)
		<-inst.exited
	}
}

// bind makes inv the process's current invocation and starts its deadline,
// or finishes it as undelivered if the process is gone.
func (inst *instance) bind(inv *invocation) bool {
	inst.mu.Lock()
	defer inst.mu.Unlock()
	select {
	case <-inst.exited:
		inst.dead = true
	default:
	}
	if inst.dead {
		inv.undelivered = true
		inst.finishLocked(inv, function.Result{}, nil)
		return false
	}
	// The whole Timeout, from now: however long the invocation waited
	// for this process, the runtime gets all of it.
	now := time.Now()
	deadline := now.Add(inst.f.cfg.Timeout)
	inv.inst, inv.start, inv.deadline = inst, now, deadline
	inst.cur = inv
	inst.reqID.Store(&inv.id)
	inv.timer = time.AfterFunc(deadline.Sub(now), func() { inst.expire(inv) })
	return true
}

// undeliver takes back an invocation the process never received.
func (inst *instance) undeliver(inv *invocation) {
	inst.mu.Lock()
	defer inst.mu.Unlock()
	if inst.cur == inv {
		inst.cur = nil
		inv.undelivered = true
		inst.finishLocked(inv, function.Result{}, nil)
	}
}

// complete finishes inv with the process's answer, unless it already ended
// (timed out).
func (inst *instance) complete(inv *invocation, res function.Result, err error) {
	inst.mu.Lock()
	defer inst.mu.Unlock()
	if inst.cur != inv {
		return
	}
	inst.cur = nil
	if err == nil {
		inst.healthy = true
	}
	inst.finishLocked(inv, res, err)
}

// expire fails inv with Lambda's timeout error and kills its process: a
// handler past its deadline may still be writing, and its process cannot
// take another invocation until it answers.
func (inst *instance) expire(inv *invocation) {
	inst.mu.Lock()
	if inst.cur != inv {
		inst.mu.Unlock()
		return
	}
	inst.cur = nil
	budget := inv.deadline.Sub(inv.start)
	inst.killReason = "timed out running request " + inv.id
	inst.timedOut = true
	inst.notePeakLocked() // while it still runs
	inst.finishLocked(inv, function.Result{}, &function.Error{
		Type:    function.TypeTimeout,
		Message: fmt.Sprintf("Task timed out after %.2f seconds", budget.Seconds()),
		Err:     context.DeadlineExceeded,
	})
	inst.mu.Unlock()
	signalGroup(inst.cmd.Process, sigKill)
}

// finishLocked settles inv once. inst.mu is held.
func (inst *instance) finishLocked(inv *invocation, res function.Result, err error) {
	if inv.finished {
		return
	}
	inv.finished = true
	inv.end = time.Now()
	if inv.timer != nil {
		inv.timer.Stop()
	}
	inv.res, inv.err = res, err
	close(inv.done)
}

// notePeakLocked reads the process's peak memory, keeping the highest
// seen: once the process has exited it can no longer be read. inst.mu is
// held.
func (inst *instance) notePeakLocked() int64 {
	select {
	case <-inst.exited: // its pid may name another process now
	default:
		inst.peak = max(inst.peak, peakMemory(inst.cmd.Process.Pid))
	}
	return inst.peak
}

// peakMemory returns the process's peak memory in bytes (0 where unknown):
// Lambda's "Max Memory Used" of its sandbox.
func (inst *instance) peakMemory() int64 {
	inst.mu.Lock()
	defer inst.mu.Unlock()
	return inst.notePeakLocked()
}

// current returns the invocation the process is running if its request id
// is id.
func (inst *instance) current(id string) *invocation {
	inst.mu.Lock()
	defer inst.mu.Unlock()
	if inst.cur != nil && inst.cur.id == id {
		return inst.cur
	}
	return nil
}

// exitDescription says how a process ended, as os/exec does.
func exitDescription(err error) string {
	if err == nil {
		return "exit status 0"
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ProcessState.String()
	}
	return err.Error()
}

// exitError is the function error of an invocation whose process exited,
// in Lambda's words.
func exitError(waitErr error) *function.Error {
	fe := &function.Error{Type: TypeExitError, Err: waitErr}
	if waitErr == nil {
		fe.Message = "Runtime exited without providing a reason"
		fe.Err = errors.New("process: runtime exited with status 0")
	} else {
		fe.Message = "Runtime exited with error: " + exitDescription(waitErr)
	}
	return fe
}

// maxLine bounds one log record: a longer line is split.
const maxLine = 64 << 10

// pipe logs each line the process writes to one of its output streams,
// until the stream ends.
func (inst *instance) pipe(r *os.File, stream string) {
	defer inst.f.tasks.Done()
	defer func() { _ = r.Close() }()
	br := bufio.NewReaderSize(r, 4096)
	pid := inst.cmd.Process.Pid
	var line []byte
	for {
		chunk, err := br.ReadSlice('\n')
		line = append(line, chunk...)
		if errors.Is(err, bufio.ErrBufferFull) && len(line) < maxLine {
			continue
		}
		if n := len(line); n > 0 {
			if line[n-1] == '\n' {
				n--
				if n > 0 && line[n-1] == '\r' {
					n--
				}
			}
			attrs := []slog.Attr{slog.String("stream", stream), slog.Int("pid", pid)}
			if id := inst.reqID.Load(); id != nil {
				attrs = append(attrs, slog.String("requestId", *id))
			}
			inst.f.log.LogAttrs(context.Background(), slog.LevelInfo, string(line[:n]), attrs...)
			line = line[:0]
		}
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return
		}
	}
}
