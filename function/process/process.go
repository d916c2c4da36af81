// Package process runs unmodified AWS Lambda functions as child processes,
// as a function.Driver. A function built with github.com/aws/aws-lambda-go
// (lambda.Start), or any runtime that speaks Lambda's Runtime API, runs on
// idem as it is: idem starts its executable, serves the Runtime API to it,
// and hands each batch to it as Lambda would, so the code needs neither an
// HTTP server of its own (as httpfn does) nor to be linked into idem (as
// gofunc does).
//
// # Delivery semantics
//
// Each Invoke hands the batch to one process, once, and never retries: the
// engine decides, with the mapping's rules, whether a failed batch is sent
// again. An invocation that fails after the process received it (a timeout,
// a crash) may have run part of the handler, so the handler sees the batch
// again: it must be idempotent, and each record carries its idempotencyKey
// for that. An invocation that never reached a process (the process died
// between asking for work and receiving it) is handed to another one.
//
// # Runtime API
//
// Each process gets Lambda's Runtime API (version 2018-06-01) on a
// loopback port of its own, as the bare host:port that Lambda's runtime
// clients expect (aws-lambda-go, the Node.js and Python runtime interface
// clients build their URLs from it, or split it at the colon):
//
//	AWS_LAMBDA_RUNTIME_API=127.0.0.1:PORT
//
// The port is what tells idem's processes apart: a request is the process's
// whose listener accepted it, so that a timeout kills the right process and
// a replaced process's late requests cannot touch its successor's
// invocation. A process's listener and connections are closed when it
// exits, and its successor gets a new port.
//
// Any local program can connect to a loopback port. On Linux, a listener
// accepts a connection only from its own process or the process's
// descendants: it looks the connecting socket up in the kernel's socket
// table (/proc/net/tcp) and among the process's open files
// (/proc/<pid>/fd), and closes a connection from anyone else unanswered,
// with a warning in the log. So no other program, of any user, can take a
// function's invocations (and their events) or answer for it through the
// Runtime API. What this does not defend against is a program that can act
// as the function's process: one of the same user (or root) can ptrace it,
// write to its memory, or read its environment and files, as it can
// idem's; run idem as a user of its own where that matters. Elsewhere than
// Linux there is no check: the port is all that guards the API.
//
// Served: GET runtime/invocation/next, POST runtime/invocation/{id}/response
// and …/{id}/error, POST runtime/init/error, and the Extensions API
// (2020-01-01) calls extension/register and extension/event/next that
// lambda.WithEnableSIGTERM makes; event/next blocks until the function
// shuts down and then answers a SHUTDOWN event.
//
// # Environment
//
// A process gets Lambda's environment, not idem's: idem's environment holds
// idem's secrets (IDEM_TOKEN, database DSNs, cloud credentials). It has
//
//   - Lambda's reserved variables: _HANDLER (the command's base name),
//     AWS_REGION and AWS_DEFAULT_REGION, AWS_LAMBDA_FUNCTION_NAME,
//     AWS_LAMBDA_FUNCTION_MEMORY_SIZE, AWS_LAMBDA_FUNCTION_VERSION ($LATEST),
//     AWS_LAMBDA_INITIALIZATION_TYPE (on-demand), AWS_LAMBDA_LOG_GROUP_NAME
//     (/aws/lambda/NAME), AWS_LAMBDA_LOG_STREAM_NAME (one per process),
//     AWS_LAMBDA_RUNTIME_API, LAMBDA_TASK_ROOT (Config.Dir) and
//     LAMBDA_RUNTIME_DIR (the command's directory); Config.Env cannot
//     override them;
//   - TZ=:UTC and LANG=en_US.UTF-8, as on Lambda;
//   - PATH: idem's own, so that an interpreter (node, python) is found where
//     the host installed it rather than where a Lambda sandbox keeps it;
//     Lambda's default when idem has none;
//   - LD_LIBRARY_PATH: idem's own, for those interpreters' libraries, then
//     LAMBDA_TASK_ROOT and LAMBDA_TASK_ROOT/lib, for the function's;
//   - Config.Env, which overrides TZ, LANG, PATH and LD_LIBRARY_PATH.
//
// No credentials are set: a function that calls AWS gets them through
// Config.Env. Config.InheritEnv passes the rest of idem's environment too
// (its TZ, LANG and LD_LIBRARY_PATH then replace the defaults).
//
// # Leftover processes
//
// On Linux each process gets SIGKILL from the kernel when idem dies,
// however it dies, so that none outlives the idem serving its Runtime API.
// With WithPIDDir, a restarted idem also ends the processes that an earlier
// run left behind in any other way.
//
// # Errors
//
// Function errors are *function.Error values whose Type is what Lambda
// would report, so that permanentErrorTypes written for AWS match:
//
//   - the errorType the runtime posted (aws-lambda-go posts the Go type
//     name of the handler's error, or of a panic's value: "errorString",
//     "boundsError"; Node.js's client the error's name: "Error",
//     "Runtime.HandlerNotFound"), with the runtime's stack trace, and the
//     error object as posted, in a *RuntimeError;
//   - function.TypeTimeout, "Task timed out after N.NN seconds", when the
//     process does not answer within Timeout of receiving the invocation;
//     the process is killed and, as a Lambda sandbox after a timeout,
//     started again at once;
//   - "Runtime.ExitError" when the process exits during an invocation
//     without answering, or during its initialization;
//   - function.TypeResponseTooLarge for a response over
//     function.MaxResponseSize, and function.ParseResponse's errors for one
//     that is not a batch response.
//
// A process that exits is started again, after an exponential backoff
// (100ms doubling to 30s) that resets once a process answers successfully
// or stays up for a minute; Status reports restarts and crash loops. A
// process idem killed for a timeout is started again without a delay, and
// its restart is no crash.
//
// # Timeouts
//
// An invocation's Timeout counts from the moment a process receives it
// (its GET invocation/next is answered; Lambda-Runtime-Deadline-Ms says
// when it ends), not from when Invoke was called: time spent waiting for
// an idle process, or for one to restart after a timeout, is not taken
// from it. The deadline of Invoke's context (and InvokeMeta.Deadline)
// bounds that wait instead; once a process has the invocation, it runs to
// its answer or its Timeout.
package process

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/function"
	"github.com/idem-run/idem/function/httpfn"
)

// Defaults and limits, in one place. The limits are Lambda's, so that a
// function configured for idem is also valid on AWS.
const (
	defaultTimeout     = 3 * time.Second
	maxTimeout         = 900 * time.Second
	defaultMemorySize  = 128
	minMemorySize      = 128
	maxMemorySize      = 10240
	defaultRegion      = "us-east-1"
	defaultConcurrency = 1
	// maxConcurrency bounds the processes of one function: a sanity limit
	// against a typo, far above what one machine runs usefully.
	maxConcurrency = 1024

	// stopGrace is how long Close waits after SIGTERM before SIGKILL,
	// Lambda's grace period for a runtime with extensions.
	stopGrace = 2 * time.Second
	// minBackoff and maxBackoff bound the delay before a dead process is
	// started again.
	minBackoff = 100 * time.Millisecond
	maxBackoff = 30 * time.Second
	// healthyAfter is how long a process must stay up for its exit not to
	// count as a crash of a crash loop.
	healthyAfter = time.Minute
	// crashLoopRestarts restarts within crashLoopWindow make a crash loop.
	crashLoopRestarts = 3
	crashLoopWindow   = time.Minute

	// maxPooled bounds the buffers kept for reuse, so that one huge batch
	// does not pin its memory for the process's life.
	maxPooled = 8 << 20
)

// TypeExitError is the error type of an invocation whose process exited
// before answering, Lambda's type for the same event.
const TypeExitError = "Runtime.ExitError"

// TypeInvalidEntrypoint is the error type of an invocation that waited for
// a process that could not be started at all (its executable is missing or
// not executable), Lambda's type for a bad entry point.
const TypeInvalidEntrypoint = "Runtime.InvalidEntrypoint"

// ErrClosed is returned by Invoke on a closed Function, and wrapped by the
// function error of an invocation that Close interrupted.
var ErrClosed = errors.New("process: function closed")

// Config says what to run and how. Its zero values mean Lambda's defaults.
type Config struct {
	// Name is the function's name: AWS_LAMBDA_FUNCTION_NAME, the invoked
	// function ARN, and the "function" attribute of its log lines. 1 to 128
	// of A-Z a-z 0-9 . _ -, as idem's configuration requires.
	Name string
	// Command is the executable: a name looked up in PATH, an absolute
	// path, or a path relative to Dir (as a shell started in Dir would find
	// it). It is resolved by New, so a missing executable fails at start.
	Command string
	// Args are the arguments after the command name.
	Args []string
	// Env adds variables to the process's environment, overriding the
	// defaults (PATH, LANG, TZ, LD_LIBRARY_PATH) and, with InheritEnv, what
	// the process inherits. The variables idem sets itself
	// (AWS_LAMBDA_RUNTIME_API, AWS_REGION, …) cannot be overridden: New
	// refuses them.
	Env map[string]string
	// InheritEnv passes idem's own environment to the process, below Env
	// and the variables idem sets. Off by default, because idem's
	// environment holds idem's secrets (IDEM_TOKEN, database DSNs, cloud
	// credentials) that a function has no business seeing: without it the
	// process gets only Lambda's variables and Env, as a Lambda function
	// gets only its configuration's. See the package documentation.
	InheritEnv bool
	// Dir is the process's working directory and its LAMBDA_TASK_ROOT.
	// Default: idem's working directory.
	Dir string
	// Concurrency is how many processes run, and so how many invocations
	// run at once; more wait for an idle process. 1 to 1024.
	// Default: 1
	Concurrency int
	// Timeout bounds one invocation from the moment a process receives it,
	// above 0 and at most 900s (Lambda's limits). Waiting for an idle
	// process is not part of it (see the package documentation).
	// Default: 3s
	Timeout time.Duration
	// MemorySize, in MB, is only reported: to the process
	// (AWS_LAMBDA_FUNCTION_MEMORY_SIZE), and in the REPORT line of a Tail
	// log. idem does not limit memory.
	// 128 to 10240.
	// Default: 128
	MemorySize int
	// Region is AWS_REGION and AWS_DEFAULT_REGION, and the region of event
	// records and ARNs.
	// Default: us-east-1
	Region string
}

// Option configures New. Options are values, so a configuration can be
// built, stored and applied more than once.
type Option interface {
	apply(*options)
}

type options struct {
	log    *slog.Logger
	pidDir string
}

type optionFunc func(*options)

func (o optionFunc) apply(opts *options) { o(opts) }

// WithLogger sets the logger that receives the processes' stdout and stderr,
// one record per line tagged with the function's name and the request id
// of the invocation the process was running, and idem's own messages about
// the processes (exits, restarts). Default: slog.Default().
func WithLogger(l *slog.Logger) Option {
	return optionFunc(func(o *options) {
		if l != nil {
			o.log = l
		}
	})
}

// WithPIDDir keeps a pid file for each running process in dir (created if
// missing), so that a later New given the same dir ends the processes an
// idem killed without closing its Functions left behind: New kills each
// such process, with its process group, if its pid still names the
// process the file recorded (it started at the recorded time), and removes
// the file. A process's file is removed when it exits. Files of an idem
// that still runs are left alone, so the Functions of one idem may share
// dir, as long as their names differ; two idems must not share it.
//
// On Linux the kernel already kills each process when idem dies, however it
// dies; the pid files catch what that misses (a process's own children that
// left its process group). Pid files are written only on Linux, where a
// process's start time can be read. Default: no pid files.
func WithPIDDir(dir string) Option {
	return optionFunc(func(o *options) { o.pidDir = dir })
}

// Function runs one Lambda function as Config.Concurrency child processes.
// It is safe for concurrent use; Invoke is called concurrently for
// different shards. Close stops the processes and the Runtime API server.
type Function struct {
	cfg    Config
	path   string // the resolved executable
	dir    string // the absolute working directory
	log    *slog.Logger
	pidDir string // where the pid files are; "" for none
	arn    string
	env    []string     // the environment, less the per-process variables
	srv    *http.Server // serves every process's listener

	// work hands invocations from Invoke to the processes' pending
	// invocation/next requests.
	work    chan *invocation
	closing chan struct{} // closed when Close starts

	supervisors sync.WaitGroup // one goroutine per process slot
	tasks       sync.WaitGroup // the server, process waiters, log readers

	// gate admits API requests until Close stops the server, so that
	// handlers is never added to after Close waits on it.
	gate     sync.Mutex
	serving  bool
	handlers sync.WaitGroup

	events sync.Pool // *eventBuf
	bodies sync.Pool // *bytes.Buffer

	closeOnce sync.Once

	mu         sync.Mutex
	closed     bool
	instances  map[string]*instance
	lastID     uint64
	restarts   int
	recent     []time.Time // restart times within crashLoopWindow
	lastExit   string
	lastExitAt time.Time
	// initFailed is closed (and replaced) each time a process ends before
	// asking for its first invocation; initErr says how. Invocations
	// waiting for a process fail with it rather than wait for a process
	// that may never come.
	initFailed chan struct{}
	initErr    *function.Error
}

// Check reports the problems New would refuse cfg for (a setting out of
// range, a command that is not an executable file, a dir that does not
// exist, an environment variable idem sets itself) without starting
// anything, so that a configuration can be checked before it is run.
func Check(cfg Config) error {
	cfg, path, dir, err := validate(cfg)
	_, envErr := environment(cfg, path, dir)
	return errors.Join(err, envErr)
}

// New validates cfg, starts cfg.Concurrency processes, each with its
// Runtime API on a loopback port, and returns without waiting for them to
// initialize: the first invocations wait until a process asks for work. It
// reports every invalid setting at once.
func New(cfg Config, opts ...Option) (*Function, error) {
	o := options{log: slog.Default()}
	for _, opt := range opts {
		if opt != nil {
			opt.apply(&o)
		}
	}
	cfg, path, dir, err := validate(cfg)
	if err != nil {
		return nil, err
	}
	env, err := environment(cfg, path, dir)
	if err != nil {
		return nil, err
	}
	if o.pidDir != "" {
		if err := os.MkdirAll(o.pidDir, 0o755); err != nil {
			return nil, fmt.Errorf("process: pid directory: %w", err)
		}
		if err := reap(o.pidDir, o.log); err != nil {
			return nil, fmt.Errorf("process: ending the processes an earlier run left: %w", err)
		}
	}
	f := &Function{
		cfg:        cfg,
		path:       path,
		dir:        dir,
		log:        o.log.With("function", cfg.Name),
		pidDir:     o.pidDir,
		arn:        "arn:aws:lambda:" + cfg.Region + ":000000000000:function:" + cfg.Name,
		env:        env,
		work:       make(chan *invocation),
		closing:    make(chan struct{}),
		serving:    true,
		instances:  make(map[string]*instance),
		initFailed: make(chan struct{}),
	}
	f.srv = &http.Server{
		Handler:           f.routes(),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(f.log.Handler(), slog.LevelDebug),
		ConnContext:       connContext,
	}
	f.supervisors.Add(cfg.Concurrency)
	for slot := range cfg.Concurrency {
		go f.supervise(slot)
	}
	return f, nil
}

var namePattern = regexp.MustCompile(`^[A-Za-z0-9._-]{1,128}$`)

// validate applies defaults and checks cfg, resolving the executable and the
// working directory.
func validate(cfg Config) (Config, string, string, error) {
	var errs []error
	if cfg.Concurrency == 0 {
		cfg.Concurrency = defaultConcurrency
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = defaultTimeout
	}
	if cfg.MemorySize == 0 {
		cfg.MemorySize = defaultMemorySize
	}
	if cfg.Region == "" {
		cfg.Region = defaultRegion
	}
	if !namePattern.MatchString(cfg.Name) {
		errs = append(errs, fmt.Errorf("process: name %q: want 1 to 128 of A-Z a-z 0-9 . _ -", cfg.Name))
	}
	if cfg.Concurrency < 1 || cfg.Concurrency > maxConcurrency {
		errs = append(errs, fmt.Errorf("process: concurrency %d: must be 1 to %d", cfg.Concurrency, maxConcurrency))
	}
	if cfg.Timeout < 0 || cfg.Timeout > maxTimeout {
		errs = append(errs, fmt.Errorf("process: timeout %s: must be above 0s and at most %s", cfg.Timeout, maxTimeout))
	}
	if cfg.MemorySize < minMemorySize || cfg.MemorySize > maxMemorySize {
		errs = append(errs, fmt.Errorf("process: memorySize %d: must be %d to %d (MB)", cfg.MemorySize, minMemorySize, maxMemorySize))
	}
	if strings.ContainsFunc(cfg.Region, func(r rune) bool { return !(r == '-' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9') }) {
		errs = append(errs, fmt.Errorf("process: region %q: want lower-case letters, digits and -", cfg.Region))
	}
	dir, err := filepath.Abs(cmpOr(cfg.Dir, "."))
	if err != nil {
		errs = append(errs, fmt.Errorf("process: dir %q: %w", cfg.Dir, err))
	} else if st, err := os.Stat(dir); err != nil {
		errs = append(errs, fmt.Errorf("process: dir: %w", err))
	} else if !st.IsDir() {
		errs = append(errs, fmt.Errorf("process: dir %q is not a directory", dir))
	}
	var path string
	switch {
	case cfg.Command == "":
		errs = append(errs, errors.New("process: command: required"))
	case !strings.ContainsRune(cfg.Command, os.PathSeparator) && !strings.ContainsRune(cfg.Command, '/'):
		if path, err = exec.LookPath(cfg.Command); err != nil {
			errs = append(errs, fmt.Errorf("process: command: %w", err))
		}
	default:
		path = cfg.Command
		if !filepath.IsAbs(path) {
			path = filepath.Join(dir, path)
		}
		if st, err := os.Stat(path); err != nil {
			errs = append(errs, fmt.Errorf("process: command: %w", err))
		} else if st.IsDir() || st.Mode()&0o111 == 0 {
			errs = append(errs, fmt.Errorf("process: command %q is not an executable file", path))
		}
	}
	if len(errs) > 0 {
		return cfg, "", "", errors.Join(errs...)
	}
	return cfg, path, dir, nil
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// reserved are the variables idem sets for the process, with the setting
// that controls each, or why it cannot be set.
var reserved = map[string]string{
	"AWS_LAMBDA_FUNCTION_NAME":        "it is the function's name",
	"AWS_LAMBDA_FUNCTION_VERSION":     "it is always $LATEST",
	"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "set memorySize instead",
	"AWS_LAMBDA_INITIALIZATION_TYPE":  "it is always on-demand",
	"AWS_LAMBDA_LOG_GROUP_NAME":       "it follows the function's name",
	"AWS_LAMBDA_LOG_STREAM_NAME":      "it names each process",
	"AWS_REGION":                      "set region instead",
	"AWS_DEFAULT_REGION":              "set region instead",
	"_HANDLER":                        "it is the command's name",
	"LAMBDA_TASK_ROOT":                "set dir instead",
	"LAMBDA_RUNTIME_DIR":              "it is the command's directory",
	"AWS_LAMBDA_RUNTIME_API":          "idem serves the Runtime API",
	// aws-lambda-go serves RPC instead of the Runtime API when it is set.
	"_LAMBDA_SERVER_PORT": "idem speaks the Runtime API, not RPC",
	// aws-lambda-go would run several invocations in one process; idem
	// gives each process one at a time.
	"AWS_LAMBDA_MAX_CONCURRENCY": "set concurrency instead",
}

// Lambda's values of the variables a function may override (its
// "unreserved" variables), for a process that does not inherit them.
const (
	lambdaPath = "/usr/local/bin:/usr/bin/:/bin:/opt/bin"
	lambdaLang = "en_US.UTF-8"
	lambdaTZ   = ":UTC"
)

// environment builds the process environment, less the variables that
// differ per process (AWS_LAMBDA_RUNTIME_API, AWS_LAMBDA_LOG_STREAM_NAME):
//
//   - with cfg.InheritEnv, idem's own, without the reserved variables;
//   - PATH, LANG, TZ and LD_LIBRARY_PATH, unless inherited;
//   - cfg.Env;
//   - Lambda's reserved variables.
//
// PATH is idem's PATH, or Lambda's default when idem has none: a runtime
// such as node or python is wherever the host installed it, not where a
// Lambda sandbox keeps it, and idem finds it (and Command) on its own PATH
// too. LD_LIBRARY_PATH likewise begins with idem's, for those interpreters'
// libraries, and then names LAMBDA_TASK_ROOT and LAMBDA_TASK_ROOT/lib, as
// Lambda's does, for libraries the function bundles.
func environment(cfg Config, path, dir string) ([]string, error) {
	var errs []error
	for _, k := range slices.Sorted(maps.Keys(cfg.Env)) {
		v := cfg.Env[k]
		switch {
		case k == "" || strings.ContainsAny(k, "=\x00"):
			errs = append(errs, fmt.Errorf("process: env %q: not a valid variable name", k))
		case strings.ContainsRune(v, 0):
			errs = append(errs, fmt.Errorf("process: env %s: the value contains a NUL byte", k))
		case reserved[k] != "":
			errs = append(errs, fmt.Errorf("process: env %s: set by idem (%s)", k, reserved[k]))
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	var env []string
	has := make(map[string]bool)
	if cfg.InheritEnv {
		for _, kv := range os.Environ() {
			k, _, _ := strings.Cut(kv, "=")
			if _, set := cfg.Env[k]; set || reserved[k] != "" || has[k] {
				continue
			}
			has[k] = true
			env = append(env, kv)
		}
	}
	libs := dir + string(os.PathListSeparator) + filepath.Join(dir, "lib")
	if l := os.Getenv("LD_LIBRARY_PATH"); l != "" {
		libs = l + string(os.PathListSeparator) + libs
	}
	for _, kv := range [][2]string{
		{"PATH", cmpOr(os.Getenv("PATH"), lambdaPath)},
		{"LANG", lambdaLang},
		{"TZ", lambdaTZ},
		{"LD_LIBRARY_PATH", libs},
	} {
		if _, set := cfg.Env[kv[0]]; !set && !has[kv[0]] {
			env = append(env, kv[0]+"="+kv[1])
		}
	}
	for _, k := range slices.Sorted(maps.Keys(cfg.Env)) {
		env = append(env, k+"="+cfg.Env[k])
	}
	env = append(env,
		"AWS_LAMBDA_FUNCTION_NAME="+cfg.Name,
		"AWS_LAMBDA_FUNCTION_VERSION=$LATEST",
		"AWS_LAMBDA_FUNCTION_MEMORY_SIZE="+strconv.Itoa(cfg.MemorySize),
		"AWS_LAMBDA_INITIALIZATION_TYPE=on-demand",
		"AWS_LAMBDA_LOG_GROUP_NAME=/aws/lambda/"+cfg.Name,
		"AWS_REGION="+cfg.Region,
		"AWS_DEFAULT_REGION="+cfg.Region,
		"_HANDLER="+filepath.Base(path),
		"LAMBDA_TASK_ROOT="+dir,
		"LAMBDA_RUNTIME_DIR="+filepath.Dir(path),
	)
	return env, nil
}

// logStreamName is a process's AWS_LAMBDA_LOG_STREAM_NAME, in Lambda's form:
// the date, the version and a random id of the execution environment.
func logStreamName(now time.Time) string {
	var id [16]byte
	_, _ = rand.Read(id[:]) // never fails on supported platforms
	return now.UTC().Format("2006/01/02") + "/[$LATEST]" + hex.EncodeToString(id[:])
}

// eventBuf is a pooled event body. Once Invoke hands an invocation to a
// process, the Runtime API handler owns it and returns it to the pool.
type eventBuf struct{ b []byte }

// Invoke encodes b as the Lambda event its Format names, a KinesisEvent or
// a KafkaEvent (as httpfn does, each record with its "idempotencyKey"), hands it to an idle process, and waits for the
// process's answer. At most Config.Concurrency invocations run at once;
// others wait for a process to become idle. A process's response is read
// by function.ParseResponse, partial and complete failures included; the
// function errors are those the package documentation lists.
//
// Waiting for a process is bounded by ctx; if its deadline passes first,
// the error is a function error of type function.TypeTimeout. Once a
// process receives the batch, it has Config.Timeout to answer, whatever
// ctx's deadline (see the package documentation). If a
// process fails to initialize while Invoke waits, Invoke fails with that
// failure ("Runtime.ExitError", or the error the runtime posted to
// init/error) instead of waiting for the next attempt. When ctx is
// canceled (not timed out), Invoke returns ctx.Err() at once; a process
// already running the batch finishes it (within Timeout) and its answer is
// dropped.
func (f *Function) Invoke(ctx context.Context, b *idem.Batch) (function.Result, error) {
	inv, err := f.run(ctx, requestID(b), func(dst []byte) []byte {
		return httpfn.AppendEvent(dst, f.cfg.Region, b)
	}, false, nil)
	if err != nil {
		return function.Result{}, err
	}
	return inv.res, inv.err
}

// run hands the event that encode appends to an idle process, as
// invocation id, and waits for the process's answer; the returned
// invocation holds it. With raw set, the answer is kept verbatim
// (invocation.payload) instead of being read as a batch response. Its
// error is for a failure before a process answered.
func (f *Function) run(ctx context.Context, id string, encode func([]byte) []byte, raw bool, clientContext []byte) (*invocation, error) {
	select {
	case <-f.closing:
		return nil, ErrClosed
	default:
	}
	start := time.Now()
	for {
		ev, ok := f.events.Get().(*eventBuf)
		if !ok {
			ev = new(eventBuf)
		}
		ev.b = encode(ev.b[:0])
		inv := &invocation{id: id, event: ev, done: make(chan struct{}), raw: raw, clientContext: clientContext, traceID: xrayTraceID(ctx)}
		f.mu.Lock()
		initFailed := f.initFailed
		f.mu.Unlock()
		select {
		case f.work <- inv: // the process's handler owns ev now
		case <-ctx.Done():
			f.putEvent(ev)
			return nil, f.waitError(ctx, start)
		case <-f.closing:
			f.putEvent(ev)
			return nil, ErrClosed
		case <-initFailed:
			f.putEvent(ev)
			f.mu.Lock()
			fe := *f.initErr
			f.mu.Unlock()
			return nil, &fe
		}
		select {
		case <-inv.done:
		case <-ctx.Done():
			if !errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return nil, ctx.Err()
			}
			// ctx's deadline bounds the wait for a process, not the
			// run: a process that has the invocation gets its whole
			// Timeout, and its timer ends it then at the latest.
			<-inv.done
		}
		if inv.undelivered {
			continue // no process saw it: hand it to another
		}
		return inv, nil
	}
}

// waitError says why Invoke gave up waiting for an idle process.
func (f *Function) waitError(ctx context.Context, start time.Time) error {
	if !errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return ctx.Err()
	}
	return &function.Error{
		Type: function.TypeTimeout,
		Message: fmt.Sprintf("Task timed out after %.2f seconds waiting for an idle process (all %d busy or starting)",
			time.Since(start).Seconds(), f.cfg.Concurrency),
		Err: ctx.Err(),
	}
}

func (f *Function) putEvent(ev *eventBuf) {
	if cap(ev.b) <= maxPooled {
		f.events.Put(ev)
	}
}

// requestID returns the batch's InvocationID when it can serve as Lambda's
// request id (it appears in URL paths), and a random UUID otherwise.
func requestID(b *idem.Batch) string {
	if id := b.InvocationID; id != "" && len(id) <= 128 && !strings.ContainsFunc(id, func(r rune) bool {
		return !(r == '-' || r == '_' || r == '.' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9')
	}) {
		return id
	}
	return newUUID()
}

func newUUID() string {
	var u [16]byte
	_, _ = rand.Read(u[:]) // never fails on supported platforms
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	h := hex.EncodeToString(u[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// Status is a snapshot of a Function's processes, for `idem status`.
type Status struct {
	// Concurrency is how many processes the function should have.
	Concurrency int
	// Running is how many processes are alive now; fewer than Concurrency
	// means some are waiting to be restarted.
	Running int
	// Restarts counts the processes started to replace one that exited.
	Restarts int
	// LastExit says how the last process to exit ended ("exit status 1",
	// "signal: killed (timed out running request …)"); empty if none has.
	LastExit string
	// LastExitAt is when that process exited.
	LastExitAt time.Time
	// CrashLoop is set when the function's processes exited on their own
	// at least 3 times in the last minute (idem's kills for timeouts do not
	// count): they die faster than they serve, and each restart waits
	// longer (up to 30s).
	CrashLoop bool
}

// Status reports the processes' state.
func (f *Function) Status() Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.pruneRecent(time.Now())
	return Status{
		Concurrency: f.cfg.Concurrency,
		Running:     len(f.instances),
		Restarts:    f.restarts,
		LastExit:    f.lastExit,
		LastExitAt:  f.lastExitAt,
		CrashLoop:   len(f.recent) >= crashLoopRestarts,
	}
}

// pruneRecent drops restart times older than the crash-loop window. f.mu
// is held.
func (f *Function) pruneRecent(now time.Time) {
	i := 0
	for i < len(f.recent) && now.Sub(f.recent[i]) > crashLoopWindow {
		i++
	}
	f.recent = f.recent[i:]
}

// Close stops the function: registered extensions get a SHUTDOWN event and
// each process SIGTERM; processes still running 2 seconds later get
// SIGKILL. Invocations waiting for a process fail with ErrClosed, and a
// running one with a function error wrapping it. Close then stops the
// Runtime API server and returns once every goroutine the Function started
// has ended. It is safe to call more than once, and concurrently: every call returns
// once the first is done.
func (f *Function) Close() {
	f.closeOnce.Do(func() {
		f.mu.Lock()
		f.closed = true
		close(f.closing)
		f.mu.Unlock()

		f.supervisors.Wait() // each stops its process
		f.gate.Lock()
		f.serving = false
		f.gate.Unlock()
		_ = f.srv.Close()
		f.handlers.Wait()
		f.tasks.Wait()
	})
}
