package systemd

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/mworker/mworker/internal/e2etest"
)

// appScript is the application the units start as /usr/local/bin/app:
// mworker's demo worker (it serves on the sockets it is passed, says
// READY=1, answers "generation=G slot=S pid=P" and drains on a stop
// signal), which takes no arguments, so --config is dropped. While
// failMarker exists it fails at once, to make a reload fail.
const (
	failMarker = "/etc/app/fail"
	appScript  = "#!/bin/sh\n[ -e " + failMarker + " ] && exit 3\nexec " + docMworker + " demo-worker\n"
	// addr is where both documented services listen (--listen :8080,
	// ListenStream=8080), in the container's own network namespace.
	addr = "127.0.0.1:8080"
)

// install puts mworker, the application and the units of docs/systemd.md,
// exactly as written there, into the container, creates the users they
// run as, and has systemd read the units.
func install(t *testing.T, c *container) {
	t.Helper()
	if err := e2etest.CopyFile(mworkerPath, c.path(docMworker)); err != nil {
		t.Fatal(err)
	}
	if err := e2etest.WriteExecutable(c.path(docApp), appScript); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(c.path(filepath.Dir(failMarker)), 0o755); err != nil {
		t.Fatal(err)
	}
	var sysusers strings.Builder
	for name, text := range docUnits(t) {
		if err := os.WriteFile(c.path("/etc/systemd/system/"+name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		users, groups := unitValues(text, "User"), unitValues(text, "Group")
		for _, u := range users {
			fmt.Fprintf(&sysusers, "u %s -\n", u)
			for _, g := range groups {
				if g != u {
					fmt.Fprintf(&sysusers, "g %s -\nm %s %s\n", g, u, g)
				}
			}
		}
	}
	if err := os.MkdirAll(c.path("/etc/sysusers.d"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(c.path("/etc/sysusers.d/mworker-e2e.conf"), []byte(sysusers.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	c.run("systemd-sysusers", "/etc/sysusers.d/mworker-e2e.conf")
	c.run("systemctl", "daemon-reload")
}

// generation returns G of the demo worker's answer "generation=G ...".
func generation(answer string) string {
	m := regexp.MustCompile(`generation=(\S*)`).FindStringSubmatch(answer)
	if m == nil {
		return ""
	}
	return m[1]
}

// waitGeneration waits until an answer comes from generation gen.
func waitGeneration(t *testing.T, c *container, gen string) {
	t.Helper()
	var last string
	var lastErr error
	if !e2etest.Poll(20*time.Second, func() bool {
		last, lastErr = c.get(addr, "/", 5*time.Second)
		return lastErr == nil && generation(last) == gen
	}) {
		t.Fatalf("no answer from generation %s within 20s; last answer %q, error %v", gen, last, lastErr)
	}
}

// sigkills counts systemd's "Killing process N (...) with signal SIGKILL"
// lines in a unit's journal: workers it killed because they outlived the
// master or the stop timeout.
func sigkills(journal string) int {
	return strings.Count(journal, "with signal SIGKILL")
}

// expectCleanStop checks a unit that was just stopped: inactive, its main
// process exited (not killed) with status 0, nothing SIGKILLed.
func expectCleanStop(t *testing.T, c *container, unit string) {
	t.Helper()
	p := c.show(unit, "ActiveState", "Result", "ExecMainCode", "ExecMainStatus")
	if p["ActiveState"] != "inactive" || p["Result"] != "success" || p["ExecMainCode"] != "1" || p["ExecMainStatus"] != "0" {
		t.Errorf("after systemctl stop %s: %v, want inactive, success, main process exited (ExecMainCode=1) with 0\n%s", unit, p, tail(c.journal(unit), 20))
	}
	if j := c.journal(unit); sigkills(j) > 0 {
		t.Errorf("systemd SIGKILLed processes of %s:\n%s", unit, tail(j, 30))
	}
}

// TestAppService runs app.service of docs/systemd.md under systemd:
// start waits for READY=1, a reload, a failed reload, a stop, and a
// master killed with SIGKILL, which Restart=on-failure restarts.
func TestAppService(t *testing.T) {
	t.Parallel()
	c := boot(t, requireRootfs(t))
	install(t, c)
	t.Log(strings.TrimSpace(c.run("systemctl", "--version")))

	// Type=notify: systemctl start returns once the master said READY=1,
	// after every worker did; the service answers at once.
	c.run("systemctl", "enable", "--now", "app")
	if a, err := c.get(addr, "/", 5*time.Second); err != nil || generation(a) != "1" {
		t.Fatalf("systemctl start app returned, but GET / gave %q, %v: want an answer from generation 1", a, err)
	}

	c.run("systemctl", "reload", "app")
	waitGeneration(t, c, "2")

	// A new generation that cannot start: ExecReload= (mworker reload)
	// fails, so systemctl reload does, and generation 2 keeps serving.
	if err := os.WriteFile(c.path(failMarker), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := c.output("systemctl", "reload", "app"); err == nil {
		t.Fatalf("systemctl reload app succeeded while the new generation cannot start:\n%s", out)
	}
	os.Remove(c.path(failMarker))
	if p := c.show("app", "ActiveState", "SubState", "StatusText"); p["ActiveState"] != "active" || p["SubState"] != "running" {
		t.Fatalf("after a failed reload: %v, want active/running", p)
	} else {
		t.Logf("after a failed reload, StatusText=%q", p["StatusText"])
	}
	if a, err := c.get(addr, "/", 5*time.Second); err != nil || generation(a) != "2" {
		t.Fatalf("after a failed reload GET / gave %q, %v: want generation 2 still serving", a, err)
	}

	c.run("systemctl", "stop", "app")
	expectCleanStop(t, c, "app")

	// kill -9 of the master: Restart=on-failure starts a new one; systemd
	// has reaped the old workers (KillMode=mixed kills what is left of
	// the cgroup), and the new master serves.
	c.run("systemctl", "start", "app")
	before := c.show("app", "MainPID", "NRestarts")
	c.run("systemctl", "kill", "--kill-who=main", "--signal=SIGKILL", "app")
	var now map[string]string
	if !e2etest.Poll(30*time.Second, func() bool {
		now = c.show("app", "MainPID", "NRestarts", "ActiveState", "SubState")
		return now["ActiveState"] == "active" && now["SubState"] == "running" && now["MainPID"] != before["MainPID"] && now["MainPID"] != "0"
	}) {
		t.Fatalf("after SIGKILL of the master (pid %s): %v, want a restarted master, active/running\n%s", before["MainPID"], now, tail(c.journal("app"), 20))
	}
	if now["NRestarts"] == before["NRestarts"] {
		t.Errorf("NRestarts stayed %s after the master was killed", now["NRestarts"])
	}
	waitGeneration(t, c, "1")
	c.run("systemctl", "stop", "app")
}

// TestSocketActivation runs web.socket and web.service of docs/systemd.md:
// the first connection starts the service, which serves on systemd's
// socket, reloads, and stops while the socket stays with systemd and
// starts it again.
func TestSocketActivation(t *testing.T) {
	t.Parallel()
	c := boot(t, requireRootfs(t))
	install(t, c)
	c.run("systemctl", "enable", "--now", "web.socket")
	if p := c.show("web.service", "ActiveState"); p["ActiveState"] != "inactive" {
		t.Fatalf("web.service is %s before any connection, want inactive", p["ActiveState"])
	}
	// The connection that starts the service waits in the socket's queue
	// until a worker accepts it.
	if a, err := c.get(addr, "/", 30*time.Second); err != nil || generation(a) != "1" {
		t.Fatalf("first connection to web.socket: %q, %v; want an answer from generation 1\n%s", a, err, tail(c.journal("web.service"), 20))
	}
	// It is active once every worker said READY=1, a moment after the
	// first of them answered.
	var p map[string]string
	if !e2etest.Poll(30*time.Second, func() bool {
		p = c.show("web.service", "ActiveState", "SubState")
		return p["ActiveState"] == "active"
	}) {
		t.Fatalf("web.service after the first connection: %v, want active", p)
	}
	c.run("systemctl", "reload", "web.service")
	waitGeneration(t, c, "2")

	c.run("systemctl", "stop", "web.service")
	expectCleanStop(t, c, "web.service")
	if p := c.show("web.socket", "ActiveState", "SubState"); p["ActiveState"] != "active" || p["SubState"] != "listening" {
		t.Fatalf("web.socket after stopping web.service: %v, want active/listening", p)
	}
	if a, err := c.get(addr, "/", 30*time.Second); err != nil || generation(a) != "1" {
		t.Fatalf("a connection after the stop should start web.service again: %q, %v", a, err)
	}
	c.run("systemctl", "stop", "web.service", "web.socket")
}

// stopDuringReloadTries is how many times TestStopDuringReload stops
// app.service right after asking for a reload.
const stopDuringReloadTries = 30

// TestStopDuringReload is what an everyday deploy does: a reload, then at
// once a stop, with app.service as documented. Every stop must drain: the
// master exits by itself (it is not killed by the stop signal in the
// middle of its reload), and systemd never SIGKILLs a worker.
func TestStopDuringReload(t *testing.T) {
	t.Parallel()
	c := boot(t, requireRootfs(t))
	install(t, c)
	c.run("systemctl", "start", "app")

	deaths, killed, lost, reloadKilled, unclean := 0, 0, 0, 0, 0
	results := map[string]int{}
	seenKills, seenReloads := 0, 0
	start := time.Now()
	for i := 1; i <= stopDuringReloadTries; i++ {
		out, err := c.sh("systemctl reload --no-block app; systemctl stop app")
		p := c.show("app", "ActiveState", "Result", "ExecMainCode", "ExecMainStatus")
		j := c.journal("app")
		kills := sigkills(j) - seenKills
		seenKills += kills
		// systemd kills the ExecReload= client (mworker reload) that a
		// stop interrupts (or the client reports the reload it was
		// waiting for as failed), and then calls the unit failed
		// (Result=signal or exit-code) whatever the master did:
		// systemd's behaviour, counted apart.
		reloads := strings.Count(j, "Control process exited, code=") - seenReloads
		seenReloads += reloads
		results[p["Result"]]++
		var what []string
		if err != nil {
			what = append(what, fmt.Sprintf("systemctl stop: %v %s", err, strings.TrimSpace(out)))
		}
		// ExecMainCode is the si_code of the master's end: 1 exited,
		// 2 killed by signal ExecMainStatus, 3 dumped core.
		switch p["ExecMainCode"] {
		case "1":
		case "2", "3":
			deaths++
			what = append(what, fmt.Sprintf("master died of signal %s (ExecMainCode=%s)", p["ExecMainStatus"], p["ExecMainCode"]))
		default:
			// Seen with Result=success: systemd recorded no exit of
			// the main process; not a death, but worth a look.
			what = append(what, fmt.Sprintf("ExecMainCode=%s: systemd recorded no exit of the master", p["ExecMainCode"]))
		}
		if kills > 0 {
			killed++
			what = append(what, fmt.Sprintf("systemd SIGKILLed %d processes", kills))
		}
		// A lost stop: the master never acted on the stop signal, and
		// systemd waited TimeoutStopSec= before killing it.
		if p["Result"] == "timeout" || (p["ActiveState"] != "inactive" && p["ActiveState"] != "failed") {
			lost++
			what = append(what, fmt.Sprintf("the stop was lost (Result=%s, %s)", p["Result"], p["ActiveState"]))
		}
		if reloads > 0 {
			reloadKilled++
			what = append(what, "the ExecReload= client was killed or failed")
		} else if p["Result"] != "success" && p["ExecMainCode"] == "1" {
			unclean++
			what = append(what, fmt.Sprintf("the master exited %s", p["ExecMainStatus"]))
		}
		if len(what) > 0 {
			t.Logf("try %d: %s; Result=%s ExecMainStatus=%s", i, strings.Join(what, "; "), p["Result"], p["ExecMainStatus"])
		}
		if lost >= 3 {
			t.Errorf("stopping after %d tries: %d stops lost, each waits TimeoutStopSec", i, lost)
			break
		}
		c.output("systemctl", "reset-failed", "app")
		if out, err := c.output("systemctl", "start", "app"); err != nil {
			t.Fatalf("try %d: systemctl start app after the stop: %v\n%s\njournal:\n%s", i, err, out, tail(c.journal("app"), 40))
		}
	}
	t.Logf("%d × reload --no-block; stop in %v: %d master deaths, %d stops with SIGKILLed processes, %d lost stops, %d other failed exits; ExecReload= killed %d times; unit results %v",
		stopDuringReloadTries, time.Since(start).Round(100*time.Millisecond), deaths, killed, lost, unclean, reloadKilled, results)
	if deaths > 0 || killed > 0 || lost > 0 || unclean > 0 {
		t.Errorf("a stop during a reload must drain: %d master deaths, %d stops that SIGKILLed workers, %d lost stops, %d other failed exits in %d tries (journal of the last stops):\n%s",
			deaths, killed, lost, unclean, stopDuringReloadTries, tail(c.journal("app"), 40))
	}
	c.run("systemctl", "stop", "app")
}

// TestHelloService runs hello.service of docs/systemd.md ("Try it with
// examples/httpworker") as written: DynamicUser=yes, so no user to
// create, and the worker built from examples/httpworker at the path the
// unit names. It starts, answers, reloads and stops cleanly.
func TestHelloService(t *testing.T) {
	t.Parallel()
	c := boot(t, requireRootfs(t))
	hw, err := e2etest.Build(t.TempDir(), "httpworker", "./examples/httpworker")
	if err != nil {
		t.Fatal(err)
	}
	install(t, c)
	if err := e2etest.CopyFile(hw, c.path("/usr/local/bin/httpworker")); err != nil {
		t.Fatal(err)
	}
	c.run("systemctl", "start", "hello")
	waitGeneration(t, c, "1")
	c.run("systemctl", "reload", "hello")
	waitGeneration(t, c, "2")
	c.run("systemctl", "stop", "hello")
	// Not expectCleanStop: systemd 252 leaves ExecMainCode=0 for this
	// DynamicUser= unit after the stop (the master's exit is in the
	// journal instead).
	p := c.show("hello.service", "ActiveState", "Result")
	j := c.journal("hello.service")
	if p["ActiveState"] != "inactive" || p["Result"] != "success" || !strings.Contains(j, `"all workers gone; exiting" status=0`) || sigkills(j) > 0 {
		t.Errorf("after systemctl stop hello: %v, want inactive and success, the master exiting 0, nothing SIGKILLed\n%s", p, tail(j, 30))
	}
}
