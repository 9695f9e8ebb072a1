package peers

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mworker/mworker/internal/e2etest"
)

// peerCase is one ported case of a peer's suite.
type peerCase struct {
	name   string // the subtest
	source string // the peer's file and test
	checks string // what it checks, in one line
	// tini and dumb say what each peer does here (docs/peers.md's
	// columns); "" when the case is not run against that peer.
	tini, dumb string
	// design is empty when mworker does what the peer's test asserts;
	// else the reason, in one sentence, for mworker's documented
	// alternative, which mw then asserts.
	design string
	// mw runs the case against mworker; tiniT and dumbT against the peers
	// (nil: not run), asserting what tini and dumb say.
	mw, tiniT, dumbT func(t *testing.T, r *run)
}

const (
	tiniSuite = "tini test/run_inner_tests.py"
	dumbTests = "dumb-init tests/"
)

// Signals of the dumb-init suite's NORMAL_SIGNALS (1..31 but KILL, STOP,
// CHLD, TSTP, TTIN, TTOU) that mworker forwards: all but HUP, USR1, USR2
// (commands), PIPE and URG (never forwarded), in an order that sends the
// two stop signals last (TERM starts the stop; signals sent after it are
// still forwarded).
var mwForwarded = []int{3, 4, 5, 6, 7, 8, 11, 14, 16, 18, 24, 25, 26, 27, 28, 29, 30, 31, 15, 2}

// normalSignals is the suite's NORMAL_SIGNALS in ascending order.
var normalSignals = []int{1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13, 14, 15, 16, 18, 23, 24, 25, 26, 27, 28, 29, 30, 31}

// tiniFatal are the signals tini does not catch: sent to it with kill(2),
// they end tini itself with 128+N.
var tiniFatal = []int{4, 5, 6, 7, 8, 11, 31}

var cases = []peerCase{
	{
		name:   "ExitCodeInclusive",
		source: tiniSuite + ": exit code test (inclusive)",
		checks: "`-e N` and a child that exits N: the init exits 0, for 42 codes N spread over 0..255 (all 256 with `-peers.allcodes`)",
		tini:   "passes",
		mw: func(t *testing.T, r *run) {
			exitCodes(t, r, func(c int) []string {
				return mwArgv([]string{"--success-exit", fmt.Sprint(c)}, "/bin/sh", "-c", fmt.Sprintf("exit %d", c))
			}, func(int) int { return 0 })
		},
		tiniT: func(t *testing.T, r *run) {
			exitCodes(t, r, func(c int) []string {
				return tiniArgv([]string{"-e", fmt.Sprint(c)}, "/bin/sh", "-c", fmt.Sprintf("exit %d", c))
			}, func(int) int { return 0 })
		},
	},
	{
		name:   "ExitCodeExclusive",
		source: tiniSuite + ": exit code test (exclusive)",
		checks: "`-e` for the 255 other codes and a child that exits N: the init exits N, for the same codes N",
		tini:   "passes",
		mw: func(t *testing.T, r *run) {
			exitCodes(t, r, func(c int) []string {
				return mwArgv(otherCodes("--success-exit", c), "/bin/sh", "-c", fmt.Sprintf("exit %d", c))
			}, func(c int) int { return c })
		},
		tiniT: func(t *testing.T, r *run) {
			exitCodes(t, r, func(c int) []string {
				return tiniArgv(otherCodes("-e", c), "/bin/sh", "-c", fmt.Sprintf("exit %d", c))
			}, func(c int) int { return c })
		},
	},
	{
		name:   "Reaping",
		source: tiniSuite + ": reaping test (test/reaping, with -s)",
		checks: "the child orphans 100 sleeps; once the init's only descendant is the child, nothing else is left in the child's process group (all reaped); the init exits 0",
		tini:   "passes with `-s` (not PID 1 here)",
		dumb:   "not run: no subreaper mode, reaps orphans only as PID 1",
		mw:     func(t *testing.T, r *run) { reaping(t, r, with(mwArgv), true) },
		tiniT:  func(t *testing.T, r *run) { reaping(t, r, with(tiniArgv, "-s"), true) },
	},
	{
		name:   "ReapingDisplay",
		source: tiniSuite + ": reaping display test (-w)",
		checks: "the init says on stderr that it reaped an orphan (tini `-w`; mworker `--log-level debug`)",
		tini:   "passes (`-s -w`)",
		mw: func(t *testing.T, r *run) {
			reapDisplay(t, r, with(mwArgv, "--log-level", "debug"), `msg="reaped unknown child"`)
		},
		tiniT: func(t *testing.T, r *run) {
			reapDisplay(t, r, with(tiniArgv, "-s", "-w"), "Reaped zombie process with pid=")
		},
	},
	{
		name:   "ReapingNotSubreaper",
		source: tiniSuite + ": zombie reaping failure test",
		checks: "tini neither PID 1 nor a subreaper: it warns \"zombie reaping won't work\" and the reaping test fails",
		tini:   "warns; the orphans leave its tree unreaped",
		design: "mworker always makes itself a child subreaper, so it reaps orphans without being PID 1 or given an option, and has nothing to warn about (checked: the reaping test passes with no option and no warning)",
		mw: func(t *testing.T, r *run) {
			p := reaping(t, r, with(mwArgv), true)
			if s := p.stderr(); strings.Contains(s, "reaping") || strings.Contains(s, "subreaper") {
				t.Errorf("mworker warned:\n%s", s)
			}
		},
		tiniT: func(t *testing.T, r *run) {
			p := reaping(t, r, with(tiniArgv), false)
			if !strings.Contains(p.stderr(), "zombie reaping won't work") {
				t.Errorf("tini did not warn:\n%s", p.stderr())
			}
		},
	},
	{
		name:   "SignalTERM",
		source: tiniSuite + ": signals test, SIGTERM",
		checks: "SIGTERM to the init: the child (a shell waiting for a sleep, TERM at its default) dies of it; the init exits 143",
		tini:   "passes",
		dumb:   "passes",
		mw:     func(t *testing.T, r *run) { signalExit(t, r, with(mwArgv), syscall.SIGTERM, 143) },
		tiniT:  func(t *testing.T, r *run) { signalExit(t, r, with(tiniArgv), syscall.SIGTERM, 143) },
		dumbT:  func(t *testing.T, r *run) { signalExit(t, r, with(dumbArgv), syscall.SIGTERM, 143) },
	},
	{
		name:   "SignalUSR1",
		source: tiniSuite + ": signals test, SIGUSR1",
		checks: "SIGUSR1 to the init: the child dies of it; the init exits 138",
		tini:   "passes",
		dumb:   "passes",
		design: "SIGUSR1 is mworker's soft stop (`--stop-signal` to every worker, then exit), the stop that survives an upgrade's re-exec (checked: the child dies of SIGTERM, the master exits 143)",
		mw:     func(t *testing.T, r *run) { signalExit(t, r, with(mwArgv), syscall.SIGUSR1, 143) },
		tiniT:  func(t *testing.T, r *run) { signalExit(t, r, with(tiniArgv), syscall.SIGUSR1, 138) },
		dumbT:  func(t *testing.T, r *run) { signalExit(t, r, with(dumbArgv), syscall.SIGUSR1, 138) },
	},
	{
		name:   "SignalUSR2",
		source: tiniSuite + ": signals test, SIGUSR2",
		checks: "SIGUSR2 to the init: the child dies of it; the init exits 140",
		tini:   "passes",
		dumb:   "passes",
		design: "SIGUSR2 is mworker's reload, as for nginx, unicorn and HAProxy (checked: a second generation replaces the worker and the master runs on)",
		mw:     func(t *testing.T, r *run) { reloadOn(t, r, syscall.SIGUSR2) },
		tiniT:  func(t *testing.T, r *run) { signalExit(t, r, with(tiniArgv), syscall.SIGUSR2, 140) },
		dumbT:  func(t *testing.T, r *run) { signalExit(t, r, with(dumbArgv), syscall.SIGUSR2, 140) },
	},
	{
		name:   "ProcessGroup",
		source: tiniSuite + ": process group test (-g, TINI_KILL_PROCESS_GROUP), test/pgroup",
		checks: "SIGUSR1 to the init reaches the child's whole group: the child catches it, its sleep dies of it, then the child and the init exit",
		tini:   "passes with `-g`",
		dumb:   "passes (setsid mode signals the group)",
		design: "SIGUSR1 is mworker's soft stop; forwarding to the worker's whole process group is mworker's default, checked with SIGALRM, a forwarded signal",
		mw:     func(t *testing.T, r *run) { pgroup(t, r, with(mwArgv), syscall.SIGALRM) },
		tiniT:  func(t *testing.T, r *run) { pgroup(t, r, with(tiniArgv, "-g"), syscall.SIGUSR1) },
		dumbT:  func(t *testing.T, r *run) { pgroup(t, r, with(dumbArgv), syscall.SIGUSR1) },
	},
	{
		name:   "SignalConfiguration",
		source: tiniSuite + ": signal configuration test (test/sigconf)",
		checks: "the init started with TTOU, SEGV, INT ignored and TTIN, ILL, TERM blocked: the child has them ignored and blocked",
		tini:   "passes",
		dumb:   "keeps none: it resets 1..31 to the default and unblocks all",
		mw:     func(t *testing.T, r *run) { sigconf(t, r, with(mwArgv), true) },
		tiniT:  func(t *testing.T, r *run) { sigconf(t, r, with(tiniArgv), true) },
		dumbT:  func(t *testing.T, r *run) { sigconf(t, r, with(dumbArgv), false) },
	},
	{
		name:   "ParentDeathSignal",
		source: tiniSuite + ": parent death signal test (-p, test/pdeathsignal)",
		checks: "`tini -p SIGUSR1`: the child kills the init's parent with SIGKILL and gets SIGUSR1",
		tini:   "passes",
		design: "mworker has no `-p`: the worker gets SIGTERM when the master itself dies, even by SIGKILL (PR_SET_PDEATHSIG, fixed), which a worker that kills the master with SIGKILL sees (checked)",
		mw: func(t *testing.T, r *run) {
			ok := r.path("ok")
			p := r.start(mwArgv(nil, sh(`trap 'echo ok > "$1"; exit 0' TERM; kill -KILL $PPID; sleep 5 & wait`, ok)...)...)
			waitOK(t, ok)
			if st := p.wait(t, 10*time.Second); st != 137 {
				t.Errorf("master status %d, want 137 (SIGKILL)", st)
			}
		},
		tiniT: func(t *testing.T, r *run) {
			ok := r.path("ok")
			inner := `trap 'echo ok > "$1"; exit 0' USR1; kill -KILL "$2"; sleep 5 & wait`
			p := r.start(sh(`tini -p SIGUSR1 -- /bin/sh -c "$1" sh "$2" "$$"; :`, inner, ok)...)
			waitOK(t, ok)
			p.wait(t, 10*time.Second)
		},
	},
	{
		name:   "SetsidSignalsGroup",
		source: dumbTests + "child_processes_test.py: test_setsid_signals_entire_group",
		checks: "SIGTERM to the init ends the child shell and the two pipelines it started (`yes | tail`, here `sleep | cat`)",
		tini:   "passes with `-g`",
		dumb:   "passes",
		mw:     func(t *testing.T, r *run) { groupTerm(t, r, with(mwArgv), 0) },
		tiniT:  func(t *testing.T, r *run) { groupTerm(t, r, with(tiniArgv, "-g"), 0) },
		dumbT:  func(t *testing.T, r *run) { groupTerm(t, r, with(dumbArgv), 0) },
	},
	{
		name:   "NoSetsidSignalsChildOnly",
		source: dumbTests + "child_processes_test.py: test_no_setsid_doesnt_signal_entire_group",
		checks: "with DUMB_INIT_SETSID=0, SIGTERM to the init reaches the child only: the four pipeline processes live on",
		tini:   "passes (without `-g`)",
		dumb:   "passes",
		design: "mworker has no single-child mode: signals go to the worker's process group, so that a wrapper and the server it started both get them; a process meant to be left alone detaches with setsid (checked: a setsid'd sleep outlives the master's SIGTERM)",
		mw: func(t *testing.T, r *run) {
			pidf := r.path("detached.pid")
			p := r.start(mwArgv(nil, sh(`setsid /bin/sh -c 'echo $$ > "$1.tmp" && mv "$1.tmp" "$1"; exec sleep 1000' sh "$1" & `+pipeline, pidf)...)...)
			d := readPid(t, p, pidf)
			waitTree(t, p, 6)
			p.signal(t, syscall.SIGTERM)
			if st := p.wait(t, 10*time.Second); st != 143 {
				t.Errorf("master status %d, want 143", st)
			}
			if !alive(d) {
				t.Errorf("the detached process %d did not outlive the master", d)
			}
		},
		tiniT: func(t *testing.T, r *run) { groupTerm(t, r, with(tiniArgv), 4) },
		dumbT: func(t *testing.T, r *run) { groupTerm(t, r, with(dumbNoSetsid), 4) },
	},
	{
		name:   "OrphansGetTERM",
		source: dumbTests + "child_processes_test.py: test_all_processes_receive_term_on_exit_if_setsid",
		checks: "the child starts print_signals in the background and exits 0: print_signals gets SIGTERM; the init exits 0",
		tini:   "fails: the background process gets nothing",
		dumb:   "passes",
		mw:     func(t *testing.T, r *run) { orphanSigs(t, r, with(mwArgv), false, true, true) },
		tiniT:  func(t *testing.T, r *run) { orphanSigs(t, r, with(tiniArgv), false, false, false) },
		dumbT:  func(t *testing.T, r *run) { orphanSigs(t, r, with(dumbArgv), false, true, false) },
	},
	{
		name:   "OrphansLeftAlone",
		source: dumbTests + "child_processes_test.py: test_processes_dont_receive_term_on_exit_if_no_setsid",
		checks: "with DUMB_INIT_SETSID=0 the background print_signals gets no SIGTERM when the child exits (then 1, 2, 3 sent to it arrive)",
		tini:   "passes",
		dumb:   "passes",
		design: "what a worker leaves in its process group gets `--stop-signal` and SIGKILL, so that crashes leak nothing under `--restart always`; a process meant to outlive its worker detaches with setsid and is left alone (checked)",
		mw:     func(t *testing.T, r *run) { orphanSigs(t, r, with(mwArgv), true, false, false) },
		tiniT:  func(t *testing.T, r *run) { orphanSigs(t, r, with(tiniArgv), false, false, false) },
		dumbT:  func(t *testing.T, r *run) { orphanSigs(t, r, with(dumbNoSetsid), false, false, false) },
	},
	{
		name:   "BadExec",
		source: dumbTests + "child_processes_test.py: test_fails_nonzero_with_bad_exec",
		checks: "a command that does not exist: the init exits nonzero and says which",
		tini:   "passes (127)",
		dumb:   "passes (2)",
		mw: func(t *testing.T, r *run) {
			cli(t, r, mwArgv(nil, "/doesnotexist"), 127, "/doesnotexist")
		},
		tiniT: func(t *testing.T, r *run) { cli(t, r, tiniArgv(nil, "/doesnotexist"), -1, "/doesnotexist") },
		dumbT: func(t *testing.T, r *run) { cli(t, r, dumbArgv(nil, "/doesnotexist"), -1, "/doesnotexist") },
	},
	{
		name:   "NoArguments",
		source: dumbTests + "cli_test.py: test_no_arguments_prints_usage",
		checks: "no arguments: the init exits nonzero with a usage message",
		tini:   "passes (1)",
		dumb:   "passes (1)",
		mw: func(t *testing.T, r *run) {
			cli(t, r, []string{mworkerPath}, 2, "Usage:")
			cli(t, r, []string{mworkerPath, "run"}, 2, "mworker run [options] -- COMMAND")
		},
		tiniT: func(t *testing.T, r *run) { cli(t, r, []string{"tini"}, -1, "Usage: tini") },
		dumbT: func(t *testing.T, r *run) { cli(t, r, []string{"dumb-init"}, -1, "Usage: dumb-init") },
	},
	{
		name:   "InvalidOption",
		source: dumbTests + "cli_test.py: test_exits_invalid_with_invalid_args",
		checks: "an unknown option: the init exits 1 and names it",
		tini:   "exits 1 (\"invalid option\")",
		dumb:   "passes",
		design: "a usage error exits 2, as documented (docs/design.md, \"Exit status of the master\"), keeping 1 for a start failure (checked: 2, the option named)",
		mw: func(t *testing.T, r *run) {
			cli(t, r, mwArgv([]string{"--yolo"}, "/bin/true"), 2, `"--yolo"`)
		},
		tiniT: func(t *testing.T, r *run) { cli(t, r, []string{"tini", "--yolo", "/bin/true"}, 1, "invalid option") },
		dumbT: func(t *testing.T, r *run) {
			cli(t, r, []string{"dumb-init", "--yolo", "/bin/true"}, 1, "unrecognized option")
		},
	},
	{
		name:   "Help",
		source: dumbTests + "cli_test.py: test_help_message",
		checks: "`-h`, `--help`: the init exits 0 with its usage",
		tini:   "passes (`-h`)",
		dumb:   "passes",
		mw: func(t *testing.T, r *run) {
			cli(t, r, []string{mworkerPath, "run", "-h"}, 0, "Usage: mworker run", "--stop-timeout")
			cli(t, r, []string{mworkerPath, "run", "--help"}, 0, "Usage: mworker run", "--stop-timeout")
		},
		tiniT: func(t *testing.T, r *run) { cli(t, r, []string{"tini", "-h"}, 0, "Usage: tini") },
		dumbT: func(t *testing.T, r *run) {
			cli(t, r, []string{"dumb-init", "-h"}, 0, "Usage: dumb-init")
			cli(t, r, []string{"dumb-init", "--help"}, 0, "Usage: dumb-init")
		},
	},
	{
		name:   "Version",
		source: dumbTests + "cli_test.py: test_version_message",
		checks: "`-V`, `--version`: the init prints its version and exits 0",
		tini:   "passes (`--version`)",
		dumb:   "passes",
		mw: func(t *testing.T, r *run) {
			cli(t, r, []string{mworkerPath, "version"}, 0, "mworker ")
			cli(t, r, []string{mworkerPath, "--version"}, 0, "mworker ")
		},
		tiniT: func(t *testing.T, r *run) { cli(t, r, []string{"tini", "--version"}, 0, "tini version") },
		dumbT: func(t *testing.T, r *run) {
			cli(t, r, []string{"dumb-init", "-V"}, 0, "dumb-init v")
			cli(t, r, []string{"dumb-init", "--version"}, 0, "dumb-init v")
		},
	},
	{
		name:   "Verbose",
		source: dumbTests + "cli_test.py: test_verbose, test_verbose_and_single_child",
		checks: "`-v`: the child's output as is, and the init logs the child's start with its pid and its exit with status 0",
		tini:   "passes (`-vvv`)",
		dumb:   "passes",
		mw: func(t *testing.T, r *run) {
			cli(t, r, mwArgv([]string{"--log-level", "debug"}, "echo", "oh,", "hi"), 0,
				"oh, hi\n", `msg="worker started" pid=`, "status=exit:0", `msg="all workers gone; exiting" status=0`)
		},
		tiniT: func(t *testing.T, r *run) {
			cli(t, r, tiniArgv([]string{"-vvv"}, "echo", "oh,", "hi"), 0, "oh, hi\n", "Spawned child process 'echo' with pid", "Main child exited normally (with status '0')")
		},
		dumbT: func(t *testing.T, r *run) {
			cli(t, r, dumbArgv([]string{"-v"}, "echo", "oh,", "hi"), 0, "oh, hi\n", "Child spawned with PID", "Child exited with status 0")
		},
	},
	{
		name:   "RewriteErrors",
		source: dumbTests + "cli_test.py: test_rewrite_errors",
		checks: "a malformed `-r s:r`: the init exits 1 with the option's usage",
		dumb:   "passes",
		design: "mworker rewrites no signal (forwarded signals arrive as sent); the one it chooses is `--stop-signal`, and a bad one is a usage error, exit 2 (checked)",
		mw: func(t *testing.T, r *run) {
			cli(t, r, mwArgv([]string{"--stop-signal", "herp"}, "/bin/true"), 2, "herp")
		},
		dumbT: func(t *testing.T, r *run) {
			cli(t, r, dumbArgv([]string{"-r", "herp:derp"}, "echo", "oh,", "hi"), 1, "Usage: -r option takes <signum>:<signum>")
		},
	},
	{
		name:   "Rewrite",
		source: dumbTests + "proxies_signals_test.py: test_proxies_signals_with_rewrite (rewrite maps)",
		checks: "with `-r 15:2`, SIGTERM to the init reaches the child as SIGINT",
		dumb:   "passes",
		design: "mworker rewrites no forwarded signal; what its stops send is `--stop-signal` (checked: `--stop-signal INT` and SIGUSR1, the soft stop: the child gets SIGINT)",
		mw: func(t *testing.T, r *run) {
			proxies(t, r, with(mwArgv, "--stop-signal", "INT"), []int{2, 10, 15}, []int{10}, []int{2})
		},
		dumbT: func(t *testing.T, r *run) {
			proxies(t, r, with(dumbArgv, "-r", "15:2"), []int{2, 3, 15}, []int{15, 3}, []int{2, 3})
		},
	},
	{
		name:   "RewriteToIgnore",
		source: dumbTests + "proxies_signals_test.py: test_ignored_signals_are_not_proxied",
		checks: "with `-r 15:3 -r 2:0 -r 28:0`: TERM arrives as QUIT, INT and WINCH are dropped, HUP arrives",
		dumb:   "passes",
		design: "mworker drops no forwarded signal on request: a worker that does not want one ignores it itself (checked: INT and WINCH reach the worker, and `--stop-signal QUIT` is what SIGUSR1 sends)",
		mw: func(t *testing.T, r *run) {
			proxies(t, r, with(mwArgv, "--stop-signal", "QUIT"), []int{2, 3, 10, 15, 28}, []int{28, 10, 2}, []int{28, 3, 2})
		},
		dumbT: func(t *testing.T, r *run) {
			proxies(t, r, with(dumbArgv, "-r", "15:3", "-r", "2:0", "-r", "28:0"), []int{1, 2, 3, 15, 28}, []int{15, 2, 28, 1}, []int{3, 0, 0, 1})
		},
	},
	{
		name:   "ProxiesSignals",
		source: dumbTests + "proxies_signals_test.py: test_proxies_signals",
		checks: "each of 1..31 but KILL, STOP, CHLD, TSTP, TTIN, TTOU sent to the init reaches the child (print_signals); the rows below take HUP, USR1, USR2, PIPE and URG",
		tini:   "forwards all but ILL, TRAP, ABRT, BUS, FPE, SEGV, SYS, which end tini itself (status 128+N)",
		dumb:   "passes",
		mw: func(t *testing.T, r *run) {
			proxies(t, r, with(mwArgv), mwForwarded, mwForwarded, mwForwarded)
		},
		tiniT: func(t *testing.T, r *run) {
			var fwd []int
			for _, n := range normalSignals {
				if !containsInt(tiniFatal, n) {
					fwd = append(fwd, n)
				}
			}
			proxies(t, r, with(tiniArgv), normalSignals, fwd, fwd)
			for _, n := range tiniFatal {
				t.Run(fmt.Sprint(n), func(t *testing.T) {
					t.Parallel()
					r := newRun(t)
					p := r.start(tiniArgv(nil, "sleep", "1000")...)
					waitTree(t, p, 1)
					p.signal(t, syscall.Signal(n))
					if st := p.wait(t, 10*time.Second); st != 128+n {
						t.Errorf("tini after signal %d: status %d, want %d", n, st, 128+n)
					}
				})
			}
		},
		dumbT: func(t *testing.T, r *run) {
			proxies(t, r, with(dumbArgv), normalSignals, normalSignals, normalSignals)
		},
	},
	{
		name:   "ProxiesHUP",
		source: dumbTests + "proxies_signals_test.py: test_proxies_signals (SIGHUP)",
		checks: "SIGHUP sent to the init reaches the child",
		tini:   "passes",
		dumb:   "passes",
		design: "SIGHUP is a reload, as for nginx and HAProxy: a new generation replaces the worker (checked); send a worker's own pid a signal meant for it",
		mw:     func(t *testing.T, r *run) { reloadOn(t, r, syscall.SIGHUP) },
		tiniT:  func(t *testing.T, r *run) { proxies(t, r, with(tiniArgv), []int{1}, []int{1}, []int{1}) },
		dumbT:  func(t *testing.T, r *run) { proxies(t, r, with(dumbArgv), []int{1}, []int{1}, []int{1}) },
	},
	{
		name:   "ProxiesUSR1",
		source: dumbTests + "proxies_signals_test.py: test_proxies_signals (SIGUSR1)",
		checks: "SIGUSR1 sent to the init reaches the child",
		tini:   "passes",
		dumb:   "passes",
		design: "SIGUSR1 is the soft stop: the child gets `--stop-signal` (TERM) instead (checked)",
		mw: func(t *testing.T, r *run) {
			proxies(t, r, with(mwArgv), []int{10, 15}, []int{10}, []int{15})
		},
		tiniT: func(t *testing.T, r *run) { proxies(t, r, with(tiniArgv), []int{10}, []int{10}, []int{10}) },
		dumbT: func(t *testing.T, r *run) { proxies(t, r, with(dumbArgv), []int{10}, []int{10}, []int{10}) },
	},
	{
		name:   "ProxiesUSR2",
		source: dumbTests + "proxies_signals_test.py: test_proxies_signals (SIGUSR2)",
		checks: "SIGUSR2 sent to the init reaches the child",
		tini:   "passes",
		dumb:   "passes",
		design: "SIGUSR2 is the reload that survives an upgrade's re-exec: a new generation replaces the worker (checked)",
		mw:     func(t *testing.T, r *run) { reloadOn(t, r, syscall.SIGUSR2) },
		tiniT:  func(t *testing.T, r *run) { proxies(t, r, with(tiniArgv), []int{12}, []int{12}, []int{12}) },
		dumbT:  func(t *testing.T, r *run) { proxies(t, r, with(dumbArgv), []int{12}, []int{12}, []int{12}) },
	},
	{
		name:   "ProxiesPIPE",
		source: dumbTests + "proxies_signals_test.py: test_proxies_signals (SIGPIPE)",
		checks: "SIGPIPE sent to the init reaches the child",
		tini:   "passes",
		dumb:   "passes",
		design: "the master catches and drops SIGPIPE: the kernel raises it when the master writes to a gone stderr or control client, and one sent with kill(2) cannot be told from those (checked: not forwarded, the master runs on, the next signal arrives)",
		mw: func(t *testing.T, r *run) {
			proxies(t, r, with(mwArgv), []int{13, 14}, []int{13, 14}, []int{0, 14})
		},
		tiniT: func(t *testing.T, r *run) { proxies(t, r, with(tiniArgv), []int{13}, []int{13}, []int{13}) },
		dumbT: func(t *testing.T, r *run) { proxies(t, r, with(dumbArgv), []int{13}, []int{13}, []int{13}) },
	},
	{
		name:   "ProxiesURG",
		source: dumbTests + "proxies_signals_test.py: test_proxies_signals (SIGURG)",
		checks: "SIGURG sent to the init reaches the child",
		tini:   "passes",
		dumb:   "passes",
		design: "the Go runtime preempts goroutines with SIGURG many times a second and a subscriber cannot tell one sent with kill(2) from those, so it is never forwarded (checked: not forwarded, the master runs on, the next signal arrives)",
		mw: func(t *testing.T, r *run) {
			proxies(t, r, with(mwArgv), []int{23, 14}, []int{23, 14}, []int{0, 14})
		},
		tiniT: func(t *testing.T, r *run) { proxies(t, r, with(tiniArgv), []int{23}, []int{23}, []int{23}) },
		dumbT: func(t *testing.T, r *run) { proxies(t, r, with(dumbArgv), []int{23}, []int{23}, []int{23}) },
	},
	{
		name:   "ProxiesInOrder",
		source: dumbTests + "proxies_signals_test.py: test_proxies_signals_with_rewrite (no rewrite)",
		checks: "TERM, QUIT, CONT, INT sent to the init reach the child in that order (the ones after TERM while the init stops)",
		tini:   "passes",
		dumb:   "passes",
		mw: func(t *testing.T, r *run) {
			seq := []int{15, 3, 18, 2}
			proxies(t, r, with(mwArgv), seq, seq, seq)
		},
		tiniT: func(t *testing.T, r *run) {
			seq := []int{15, 3, 18, 2}
			proxies(t, r, with(tiniArgv), seq, seq, seq)
		},
		dumbT: func(t *testing.T, r *run) {
			seq := []int{15, 3, 18, 2}
			proxies(t, r, with(dumbArgv), seq, seq, seq)
		},
	},
	{
		name:   "WorkingDirectory",
		source: dumbTests + "cwd_test.py: test_working_directories",
		checks: "the child starts in the caller's directory; the init itself is in `/`",
		tini:   "fails: tini stays in the caller's directory",
		dumb:   "passes",
		mw:     func(t *testing.T, r *run) { cwd(t, r, with(mwArgv), "/", false) },
		tiniT:  func(t *testing.T, r *run) { cwd(t, r, with(tiniArgv), r.dir, false) },
		dumbT:  func(t *testing.T, r *run) { cwd(t, r, with(dumbArgv), "/", true) },
	},
	{
		name:   "ExitStatus",
		source: dumbTests + "exit_status_test.py: test_exit_status_regular_exit",
		checks: "a child that exits 0, 1, 2, 32, 64, 127, 254, 255: the init exits the same",
		tini:   "passes",
		dumb:   "passes",
		mw:     func(t *testing.T, r *run) { exitStatuses(t, r, with(mwArgv)) },
		tiniT:  func(t *testing.T, r *run) { exitStatuses(t, r, with(tiniArgv)) },
		dumbT:  func(t *testing.T, r *run) { exitStatuses(t, r, with(dumbArgv)) },
	},
	{
		name:   "ExitStatusSignal",
		source: dumbTests + "exit_status_test.py: test_exit_status_terminated_by_signal",
		checks: "a child that kills itself with TERM, HUP, QUIT, KILL: the init exits 128 + the signal",
		tini:   "passes",
		dumb:   "passes",
		mw:     func(t *testing.T, r *run) { selfKill(t, r, with(mwArgv)) },
		tiniT:  func(t *testing.T, r *run) { selfKill(t, r, with(tiniArgv)) },
		dumbT:  func(t *testing.T, r *run) { selfKill(t, r, with(dumbArgv)) },
	},
	{
		name:   "Zombies",
		source: "dumb-init tests/test-zombies",
		checks: "the child's child starts a shell that exits at once, orphaned: it does not stay a zombie",
		tini:   "passes with `-s`",
		dumb:   "not run: reaps orphans only as PID 1 (no subreaper mode)",
		mw:     func(t *testing.T, r *run) { zombies(t, r, with(mwArgv)) },
		tiniT:  func(t *testing.T, r *run) { zombies(t, r, with(tiniArgv, "-s")) },
	},
	{
		name:   "RealtimeAndPROF",
		source: "issue 17 (its port of test_proxies_signals to 34 and SIGPROF)",
		checks: "SIGRTMIN (34) and SIGPROF sent to the init reach the child",
		tini:   "passes",
		dumb:   "passes",
		mw: func(t *testing.T, r *run) {
			proxies(t, r, with(mwArgv), []int{27, 34}, []int{34, 27}, []int{34, 27})
		},
		tiniT: func(t *testing.T, r *run) {
			proxies(t, r, with(tiniArgv), []int{27, 34}, []int{34, 27}, []int{34, 27})
		},
		dumbT: func(t *testing.T, r *run) {
			proxies(t, r, with(dumbArgv), []int{27, 34}, []int{34, 27}, []int{34, 27})
		},
	},
	{
		name:   "EarlyQUIT",
		source: "issue 17 (its port of test_proxies_signals to the init's first 10 ms)",
		checks: "SIGQUIT sent to the init within its first milliseconds: no crash, no stack dump; the child gets it (or, not yet trapping it, dies of it)",
		design: "for its first 2 to 8 ms the Go runtime handles signals itself and no package can catch them sooner (docs/signals.md, \"The master's first milliseconds\"); from mworker's early catch on, SIGQUIT is forwarded (checked: sent the moment the early catch is in place)",
		mw:     earlyQuit,
	},
	{
		name:   "InheritWider",
		source: "issue 17 (its port of test/sigconf to more signals)",
		checks: "the init started with QUIT, SEGV, PIPE and 40 ignored and ILL, TERM, USR2 and 50 blocked: the child has them all",
		tini:   "passes",
		dumb:   "keeps only 40 ignored: it resets 1..31 and unblocks all",
		mw:     func(t *testing.T, r *run) { inheritWider(t, r, with(mwArgv), true) },
		tiniT:  func(t *testing.T, r *run) { inheritWider(t, r, with(tiniArgv), true) },
		dumbT:  func(t *testing.T, r *run) { inheritWider(t, r, with(dumbArgv), false) },
	},
}

func containsInt(s []int, n int) bool {
	for _, v := range s {
		if v == n {
			return true
		}
	}
	return false
}

func otherCodes(flag string, code int) []string {
	var a []string
	for c := 0; c < 256; c++ {
		if c != code {
			a = append(a, flag, fmt.Sprint(c))
		}
	}
	return a
}

func waitOK(t *testing.T, path string) {
	t.Helper()
	e2etest.WaitFor(t, 15*time.Second, "ok in "+path, func() bool {
		b, _ := os.ReadFile(path)
		return string(b) == "ok\n"
	})
}

// sigconf is tini's sigconf-test: TTOU, SEGV, INT ignored, TTIN, ILL,
// TERM blocked.
func sigconf(t *testing.T, r *run, argv func(cmd ...string) []string, kept bool) {
	ign, blk := childSigs(t, r, argv, "ign=22,11,2;blk=21,4,15")
	checkSigs(t, "SigIgn", ign, map[int]bool{22: kept, 11: kept, 2: kept})
	checkSigs(t, "SigBlk", blk, map[int]bool{21: kept, 4: kept, 15: kept})
}

func inheritWider(t *testing.T, r *run, argv func(cmd ...string) []string, kept bool) {
	ign, blk := childSigs(t, r, argv, "ign=3,11,13,40;blk=4,15,12,50")
	checkSigs(t, "SigIgn", ign, map[int]bool{3: kept, 11: kept, 13: kept, 40: true})
	checkSigs(t, "SigBlk", blk, map[int]bool{4: kept, 15: kept, 12: kept, 50: kept})
}

// cwd: the child prints its parent's directory and its own.
// cwd: with afterFork, the child first waits (up to 2 s) for its init to
// be in initDir: dumb-init forks, then changes to / (a child that looked
// at once saw the caller's directory, 1 in about 40 runs under load);
// mworker must be in / before its worker starts, and tini never moves.
func cwd(t *testing.T, r *run, argv func(cmd ...string) []string, initDir string, afterFork bool) {
	script := `readlink /proc/$PPID/cwd && readlink /proc/$$/cwd`
	if afterFork {
		script = `n=0; while [ "$(readlink /proc/$PPID/cwd)" != "$1" ] && [ $n -lt 200 ]; do sleep 0.01; n=$((n + 1)); done; ` + script
	}
	p := r.start(argv(sh(script, initDir)...)...)
	if st := p.wait(t, 10*time.Second); st != 0 {
		t.Fatalf("status %d; stderr:\n%s", st, p.stderr())
	}
	if want := initDir + "\n" + r.dir + "\n"; p.stdout() != want {
		t.Errorf("the init's and the child's directories:\n%q, want\n%q", p.stdout(), want)
	}
}

func exitStatuses(t *testing.T, r *run, argv func(cmd ...string) []string) {
	for _, c := range []int{0, 1, 2, 32, 64, 127, 254, 255} {
		p := r.start(argv(sh(fmt.Sprintf("exit %d", c))...)...)
		if st := p.wait(t, 10*time.Second); st != c {
			t.Errorf("child exit %d: status %d", c, st)
		}
	}
}

func selfKill(t *testing.T, r *run, argv func(cmd ...string) []string) {
	for _, s := range []syscall.Signal{syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGKILL} {
		p := r.start(argv(sh(fmt.Sprintf("ulimit -c 0; kill -%d $$", s))...)...)
		if st := p.wait(t, 10*time.Second); st != 128+int(s) {
			t.Errorf("child killed by signal %d: status %d, want %d", s, st, 128+int(s))
		}
	}
}

// zombieWorker: $0 starts a shell that starts $1 (with $2) in the
// background and exits; $1 writes its pid to $2 and exits. The worker
// waits on the fifo $3.
const zombieWorker = `sh -c 'sh -c "$0" "$1" &' "$1" "$2"; read x < "$3"; exit 0`

const zombieInner = `echo $$ > "$0.tmp" && mv "$0.tmp" "$0"; echo i am a zombie`

func zombies(t *testing.T, r *run, argv func(cmd ...string) []string) {
	fifo := r.fifo("go")
	pidf := r.path("zombie.pid")
	p := r.start(argv("/bin/sh", "-c", zombieWorker, "sh", zombieInner, pidf, fifo)...)
	z := readPid(t, p, pidf)
	e2etest.WaitFor(t, 10*time.Second, fmt.Sprintf("the orphan %d reaped", z), func() bool {
		_, ok := statOf(z)
		return !ok
	})
	for pid, s := range allStats() {
		if s.ppid == p.pid && s.state == 'Z' {
			t.Errorf("a zombie child of the init: %d", pid)
		}
	}
	release(t, fifo)
	if st := p.wait(t, 10*time.Second); st != 0 {
		t.Errorf("status %d, want 0", st)
	}
}

// earlyQuit sends SIGQUIT to a master the moment its early catch is in
// place (SigCgt has 34, which the early catch installs last).
func earlyQuit(t *testing.T, r *run) {
	rec := r.writeRecorder()
	gotf := r.path("got")
	p := r.start(mwArgv(nil, rec, gotf, "3")...)
	e2etest.WaitFor(t, 10*time.Second, "the master's early catch", func() bool {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.pid))
		if err != nil || !strings.HasPrefix(string(b), "Name:\tmworker") {
			return p.exited()
		}
		cgt, err := sigField(string(b), "SigCgt")
		return err == nil && cgt&sigBit(34) != 0
	})
	p.signal(t, syscall.SIGQUIT)
	e2etest.WaitFor(t, 15*time.Second, "QUIT forwarded", func() bool {
		return p.exited() || strings.Contains(p.stderr(), "signal=QUIT")
	})
	if p.exited() && p.status != 128+3 {
		t.Fatalf("master exited %d, want it running or 131 (the worker died of QUIT before its trap); stderr:\n%s", p.status, p.stderr())
	}
	if s := p.stderr(); strings.Contains(s, "goroutine ") || strings.Contains(s, "SIGQUIT: quit") {
		t.Fatalf("the master dumped its stacks:\n%s", s)
	}
	if !p.exited() {
		// The worker was trapping it, or had not started: either way
		// the master runs on; a trapping recorder recorded it.
		if pid, sigs := got(gotf); pid != 0 && len(sigs) > 0 && sigs[0] != 3 {
			t.Errorf("recorder got %v", sigs)
		}
		if err := syscall.Kill(p.pid, syscall.SIGKILL); err != nil {
			// It exited since the look above: its worker died of the
			// QUIT just forwarded (seen in a loaded run).
			if st := p.wait(t, 10*time.Second); st != 128+3 {
				t.Fatalf("master exited %d, want 131 (the worker died of QUIT before its trap); stderr:\n%s", st, p.stderr())
			}
		}
	}
}

// TestPeers runs every case against mworker, and against tini and
// dumb-init when they are installed (scripts/test-deps.sh installs them).
func TestPeers(t *testing.T) {
	peers := map[string]bool{}
	for _, name := range []string{"tini", "dumb-init"} {
		_, err := exec.LookPath(name)
		peers[name] = err == nil
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			t.Run("mworker", func(t *testing.T) {
				t.Parallel()
				c.mw(t, newRun(t))
			})
			for _, pc := range []struct {
				name string
				fn   func(*testing.T, *run)
			}{{"tini", c.tiniT}, {"dumb-init", c.dumbT}} {
				if pc.fn == nil {
					continue
				}
				t.Run(pc.name, func(t *testing.T) {
					if !peers[pc.name] {
						t.Skipf("%s is not installed (scripts/test-deps.sh installs it)", pc.name)
					}
					t.Parallel()
					pc.fn(t, newRun(t))
				})
			}
		})
	}
}
