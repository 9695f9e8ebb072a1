package osadapter

import (
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mworker/mworker/fsm"
	"github.com/mworker/mworker/internal/demo"
	"github.com/mworker/mworker/internal/sdnotify"
)

// The test binary plays four parts, as tableflip's tests do: the tests,
// a master (argv[1] == "master", configured by envTestMaster), a worker
// that records the signals it receives (argv[1] == "worker"), and the
// demo's HTTP worker (argv[1] == "demo-worker").
const envTestMaster = "OSADAPTER_TEST_MASTER"

func TestMain(m *testing.M) {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "master":
			os.Exit(runTestMaster(os.Getenv(envTestMaster)))
		case "worker":
			os.Exit(runTestWorker(os.Args[2]))
		case "demo-worker":
			os.Exit(demo.Worker(os.Args[2:], os.Stdout, os.Stderr))
		}
	}
	os.Exit(m.Run())
}

// testMaster configures a master run by the test binary.
type testMaster struct {
	Workers      int
	Command      []string
	StopSignal   int
	StopTimeout  time.Duration
	Restart      string
	PidFile      string
	Listen       []string // --listen specs
	Ready        string   // --ready; "" is immediate
	ReadyTimeout time.Duration
	Control      string   // --control path
	Metrics      string   // --metrics address
	Env          []string // added to the master's environment
	// ExtraFiles are passed to the master as fds 3.. (socket activation).
	ExtraFiles []*os.File `json:"-"`
}

func runTestMaster(spec string) int {
	var c testMaster
	if err := json.Unmarshal([]byte(spec), &c); err != nil {
		fmt.Fprintln(os.Stderr, "test master:", err)
		return 2
	}
	restart, err := fsm.ParseRestartPolicy(c.Restart)
	if err != nil {
		fmt.Fprintln(os.Stderr, "test master:", err)
		return 2
	}
	var sf []int
	for i := 2; i < len(os.Args); i++ {
		if os.Args[i] == "-sf" {
			for i+1 < len(os.Args) {
				n, err := strconv.Atoi(os.Args[i+1])
				if err != nil {
					break
				}
				sf = append(sf, n)
				i++
			}
		}
	}
	ready := fsm.ReadyMode{Kind: fsm.ReadyImmediate}
	if c.Ready != "" {
		if ready, err = fsm.ParseReadyMode(c.Ready); err != nil {
			fmt.Fprintln(os.Stderr, "test master:", err)
			return 2
		}
	}
	if c.ReadyTimeout == 0 {
		c.ReadyTimeout = 20 * time.Second
	}
	cfg := Config{
		Listen:  c.Listen,
		Control: c.Control,
		Metrics: c.Metrics,
		Machine: fsm.Config{
			Workers: c.Workers, Restart: restart, StopPids: sf, Ready: ready,
			ReadyTimeout: c.ReadyTimeout, StopTimeout: c.StopTimeout, StopSignal: fsm.Signal(c.StopSignal),
		},
		Command:  c.Command,
		PidFile:  c.PidFile,
		LogLevel: -4,
	}
	return Run(cfg)
}

// runTestWorker writes "<pid>.log" in dir: a first line with its generation
// and slot, "badenv NAME" for each internal variable it can see (and the
// master's WATCHDOG_USEC and WATCHDOG_PID), then one
// line per signal. SIGTERM, SIGINT and SIGUSR1 end it with status 0.
// With NOTIFY_SOCKET set it logs "notify=ADDR", sends a malformed datagram
// and then READY=1 there, unless dir holds a file named "silent".
func runTestWorker(dir string) int {
	// The log appears under its name only once its first lines are
	// written (and the signal handler is in place), so that a test that
	// sees it can read them.
	name := fmt.Sprintf("%s/%d.log", dir, os.Getpid())
	f, err := os.OpenFile(name+".tmp", os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return 3
	}
	ch := make(chan os.Signal, 16)
	signal.Notify(ch, syscall.SIGTERM, syscall.SIGINT, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGHUP, syscall.SIGWINCH)
	fmt.Fprintf(f, "gen=%s slot=%s\n", os.Getenv(EnvGeneration), os.Getenv(EnvSlot))
	// The blocked signals this process started with (the runtime keeps
	// them blocked on the main thread).
	if b, err := os.ReadFile("/proc/self/status"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "SigBlk:"); ok {
				fmt.Fprintf(f, "sigblk=%s\n", strings.TrimSpace(v))
			}
		}
	}
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, internalEnvPrefix) && !strings.HasPrefix(kv, EnvGeneration+"=") && !strings.HasPrefix(kv, EnvSlot+"=") {
			fmt.Fprintf(f, "badenv %s\n", kv)
		}
		// The master's own watchdog is the master's to feed.
		if strings.HasPrefix(kv, "WATCHDOG_USEC=") || strings.HasPrefix(kv, "WATCHDOG_PID=") {
			fmt.Fprintf(f, "badenv %s\n", kv)
		}
	}
	addr := os.Getenv("NOTIFY_SOCKET")
	if addr != "" {
		fmt.Fprintf(f, "notify=%s\n", addr)
	}
	if err := os.Rename(name+".tmp", name); err != nil {
		return 3
	}
	if addr != "" {
		if _, err := os.Stat(dir + "/silent"); err != nil {
			if err := sdnotify.Send(addr, "READY=yes"); err != nil {
				fmt.Fprintf(f, "notify error %v\n", err)
			}
			if err := sdnotify.Send(addr, "READY=1"); err != nil {
				fmt.Fprintf(f, "notify error %v\n", err)
			}
		}
	}
	for s := range ch {
		fmt.Fprintf(f, "%s\n", fsm.Signal(s.(syscall.Signal)))
		switch s {
		case syscall.SIGTERM, syscall.SIGINT, syscall.SIGUSR1:
			f.Close()
			return 0
		}
	}
	return 0
}
