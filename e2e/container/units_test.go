package container

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mworker/mworker/internal/sdnotify"

	"github.com/mworker/mworker/internal/e2etest"
)

// Paths the documented units use, replaced by the binaries under test.
const (
	docMworker = "/usr/local/bin/mworker"
	docApp     = "/usr/local/bin/app"
)

// docUnits returns the unit files of docs/systemd.md by name, as written.
func docUnits(t *testing.T) map[string]string {
	t.Helper()
	units, err := e2etest.DocUnits(repoRoot, "app.service", "web.socket", "web.service")
	if err != nil {
		t.Fatal(err)
	}
	return units
}

// unit is a parsed unit file: section → key → values in order.
type unit map[string]map[string][]string

// parseUnit reads a unit file as systemd does for what these units use:
// sections, KEY=VALUE, comments, and lines continued with a backslash.
func parseUnit(t *testing.T, text string) unit {
	t.Helper()
	u := make(unit)
	section := ""
	var pending string
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if pending == "" && (line == "" || line[0] == '#' || line[0] == ';') {
			continue
		}
		if cont, ok := strings.CutSuffix(line, `\`); ok {
			pending += cont + " "
			continue
		}
		line, pending = pending+line, ""
		if strings.HasPrefix(line, "[") {
			section = strings.Trim(line, "[]")
			u[section] = make(map[string][]string)
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || section == "" {
			t.Fatalf("unit line %q is not KEY=VALUE inside a section", line)
		}
		u[section][strings.TrimSpace(k)] = append(u[section][strings.TrimSpace(k)], strings.TrimSpace(v))
	}
	return u
}

// one returns the single value of key in section, failing the test if
// there is none or several.
func (u unit) one(t *testing.T, section, key string) string {
	t.Helper()
	v := u[section][key]
	if len(v) != 1 {
		t.Fatalf("[%s] %s= has %d values, want 1: %q", section, key, len(v), v)
	}
	return v[0]
}

// command splits an Exec*= line into argv with %t expanded. The units in
// the docs use no quoting and no prefix (-, @, +, !): the test refuses
// them rather than misread them.
func command(t *testing.T, line, runtimeDir string) []string {
	t.Helper()
	if strings.ContainsAny(line, `"'$`) || !strings.HasPrefix(line, "/") {
		t.Fatalf("Exec line %q uses quoting, variables or a prefix this test does not interpret", line)
	}
	argv := strings.Fields(strings.ReplaceAll(line, "%t", runtimeDir))
	for i, a := range argv {
		if strings.Contains(a, "%") {
			t.Fatalf("Exec line %q: specifier in %q not handled by this test", line, a)
		}
		switch a {
		case docMworker:
			argv[i] = mworkerPath
		case docApp:
			argv[i] = httpworkerPath
		}
	}
	return argv
}

// TestUnitFilesVerify checks the unit files of docs/systemd.md with
// systemd-analyze verify; any message fails, since verify exits 0 on
// lines it ignores (an unknown Type=, a misspelt key).
func TestUnitFilesVerify(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze is not installed (Debian: apt-get install systemd), so the unit files of docs/systemd.md are not verified: " + err.Error())
	}
	units := docUnits(t)
	dir := t.TempDir()
	var files []string
	for name, text := range units {
		text = strings.ReplaceAll(text, docMworker, mworkerPath)
		text = strings.ReplaceAll(text, docApp, httpworkerPath)
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		files = append(files, path)
	}
	slices.Sort(files)
	verify := func(files ...string) (string, error) {
		out, err := exec.Command(analyze, append([]string{"verify", "--man=no"}, files...)...).CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}

	// The check must be able to fail: a unit with a bad Type= gives a
	// message (and exit status 0).
	broken := filepath.Join(t.TempDir(), "broken.service")
	if err := os.WriteFile(broken, []byte(strings.Replace(units["app.service"], "Type=notify", "Type=notify-bogus", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, _ := verify(broken); !strings.Contains(out, "notify-bogus") {
		t.Fatalf("systemd-analyze verify said nothing about Type=notify-bogus (%q): this check cannot fail", out)
	}

	out, err := verify(files...)
	if err != nil || out != "" {
		t.Fatalf("systemd-analyze verify %s: %v\n%s", strings.Join(files, " "), err, out)
	}
	version, _ := exec.Command(analyze, "--version").Output()
	first, _, _ := strings.Cut(string(version), "\n")
	t.Logf("%s: %d unit files verified clean", first, len(files))
}

// notifications receives what a master sends to its NOTIFY_SOCKET.
type notifications struct {
	path string
	ch   chan sdnotify.Datagram
}

func listenNotify(t *testing.T, dir string) *notifications {
	t.Helper()
	n := &notifications{path: filepath.Join(dir, "notify.sock"), ch: make(chan sdnotify.Datagram, 64)}
	s, err := sdnotify.Listen(n.path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	go func() {
		for {
			d, err := s.Receive()
			if err != nil {
				close(n.ch)
				return
			}
			n.ch <- d
		}
	}()
	return n
}

// next returns the next notification, which must come from mainPid (the
// only sender NotifyAccess=main lets through) within timeout.
func (n *notifications) next(t *testing.T, mainPid int, timeout time.Duration, what string) sdnotify.Message {
	t.Helper()
	select {
	case d, ok := <-n.ch:
		if !ok {
			t.Fatalf("notify socket closed while waiting for %s", what)
		}
		if d.PID != mainPid {
			t.Fatalf("notification %q came from pid %d, not the main pid %d: NotifyAccess=main would drop it", d.Payload, d.PID, mainPid)
		}
		t.Logf("notify from main pid %d: %s", d.PID, strings.ReplaceAll(strings.TrimSpace(string(d.Payload)), "\n", " "))
		return d.Message
	case <-time.After(timeout):
		t.Fatalf("no notification within %v while waiting for %s", timeout, what)
	}
	return sdnotify.Message{}
}

func duration(t *testing.T, u unit, key string) time.Duration {
	t.Helper()
	v := u.one(t, "Service", key)
	d, err := time.ParseDuration(v)
	if err != nil {
		t.Fatalf("%s=%s: the test reads only Go-style durations (30s, 1m30s): %v", key, v, err)
	}
	return d
}

// TestUnitPlaysSystemd runs app.service of docs/systemd.md as systemd
// would, without systemd: ExecStart with NOTIFY_SOCKET, a good and a
// failing ExecReload, and the stop KillMode=mixed makes.
func TestUnitPlaysSystemd(t *testing.T) {
	u := parseUnit(t, docUnits(t)["app.service"])
	if got := u.one(t, "Service", "Type"); got != "notify" {
		t.Fatalf("app.service: Type=%s; this test plays Type=notify", got)
	}
	if got := u.one(t, "Service", "KillMode"); got != "mixed" {
		t.Fatalf("app.service: KillMode=%s; this test plays KillMode=mixed", got)
	}
	if got := u.one(t, "Service", "NotifyAccess"); got != "main" {
		t.Fatalf("app.service: NotifyAccess=%s; this test plays NotifyAccess=main", got)
	}
	dir := t.TempDir()
	runtime := filepath.Join(dir, "run")
	if err := os.MkdirAll(filepath.Join(runtime, u.one(t, "Service", "RuntimeDirectory")), 0o750); err != nil {
		t.Fatal(err)
	}

	// The application: examples/httpworker, except that it fails at once
	// while the file "fail" exists, to make a reload fail.
	fail := filepath.Join(dir, "fail")
	app := filepath.Join(dir, "app")
	script := fmt.Sprintf("#!/bin/sh\n[ -e %s ] && exit 3\nexec %s \"$@\"\n", fail, httpworkerPath)
	if err := e2etest.WriteExecutable(app, script); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "http.sock")
	start := command(t, u.one(t, "Service", "ExecStart"), runtime)
	for i, a := range start {
		if a == httpworkerPath {
			start[i] = app
		}
		if a == "--listen" && i+1 < len(start) {
			start[i+1] = "unix://" + sock
		}
	}
	reload := command(t, u.one(t, "Service", "ExecReload"), runtime)
	sigName := u.one(t, "Service", "KillSignal")
	killSignal := map[string]syscall.Signal{"SIGTERM": syscall.SIGTERM, "SIGINT": syscall.SIGINT, "SIGUSR1": syscall.SIGUSR1}[sigName]
	if killSignal == 0 {
		t.Fatalf("KillSignal=%s: this test knows SIGTERM, SIGINT and SIGUSR1", sigName)
	}
	startTimeout, stopTimeout := duration(t, u, "TimeoutStartSec"), duration(t, u, "TimeoutStopSec")

	notify := listenNotify(t, dir)
	master := startProcess(t, []string{sdnotify.EnvNotifySocket + "=" + notify.path}, start...)
	pid := master.cmd.Process.Pid

	m := notify.next(t, pid, startTimeout, "READY=1 at start")
	if !m.Ready || m.MainPID != pid {
		t.Fatalf("first notification %q, want READY=1 with MAINPID=%d", m.Format(), pid)
	}
	c := unixClient(sock)
	if _, err := ask(c); err != nil {
		t.Fatalf("READY=1 was sent but the service does not answer: %v", err)
	}

	runReload := func() (int, string) {
		out, err := exec.Command(reload[0], reload[1:]...).CombinedOutput()
		if err != nil {
			if ee, ok := err.(*exec.ExitError); ok {
				return ee.ExitCode(), string(out)
			}
			t.Fatalf("ExecReload %v: %v", reload, err)
		}
		return 0, string(out)
	}
	expectReload := func(ok bool) {
		t.Helper()
		before, err := sdnotify.MonotonicUsec()
		if err != nil {
			t.Fatal(err)
		}
		status, out := runReload()
		if want := map[bool]int{true: 0, false: 1}[ok]; status != want {
			t.Fatalf("ExecReload exited %d, want %d (systemctl reload would report the opposite); output:\n%s", status, want, out)
		}
		m := notify.next(t, pid, startTimeout, "RELOADING=1")
		if !m.Reloading || m.MonotonicUsec < before {
			t.Fatalf("notification %q, want RELOADING=1 with MONOTONIC_USEC >= %d (now when the reload began)", m.Format(), before)
		}
		m = notify.next(t, pid, startTimeout, "READY=1 after the reload")
		if !m.Ready {
			t.Fatalf("notification %q, want READY=1 ending the reload", m.Format())
		}
		if status, _ := m.Status(); !ok && status == "" {
			t.Fatalf("READY=1 after a failed reload has no STATUS= saying so: %q", m.Format())
		}
	}
	expectReload(true)
	if err := os.WriteFile(fail, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	expectReload(false)
	if _, err := ask(c); err != nil {
		t.Fatalf("after a failed reload the old generation should serve: %v", err)
	}

	// KillMode=mixed: KillSignal= to the main process only.
	if err := syscall.Kill(pid, killSignal); err != nil {
		t.Fatal(err)
	}
	m = notify.next(t, pid, stopTimeout, "STOPPING=1")
	if !m.Stopping {
		t.Fatalf("notification %q, want STOPPING=1", m.Format())
	}
	status := master.exitStatus(t, stopTimeout)
	clean := []string{"0"}
	for _, v := range u[("Service")]["SuccessExitStatus"] {
		clean = append(clean, strings.Fields(v)...)
	}
	if !slices.Contains(clean, strconv.Itoa(status)) {
		t.Fatalf("master exited %d after %s; systemd would mark the unit failed (clean: %v); output:\n%s", status, sigName, clean, master.stderr)
	}
}

// TestSocketUnitPlaysSystemd runs web.socket and web.service of
// docs/systemd.md under systemd-socket-activate, systemd's own tool for
// socket activation: it binds, waits for the first connection, then execs
// ExecStart with LISTEN_FDS, LISTEN_PID and LISTEN_FDNAMES.
func TestSocketUnitPlaysSystemd(t *testing.T) {
	activate, err := exec.LookPath("systemd-socket-activate")
	if err != nil {
		t.Skip("systemd-socket-activate is not installed (Debian: apt-get install systemd), so the socket-activated unit is not played: " + err.Error())
	}
	units := docUnits(t)
	socket, service := parseUnit(t, units["web.socket"]), parseUnit(t, units["web.service"])
	name := socket.one(t, "Socket", "FileDescriptorName")
	dir := t.TempDir()
	runtime := filepath.Join(dir, "run")
	if err := os.MkdirAll(filepath.Join(runtime, service.one(t, "Service", "RuntimeDirectory")), 0o750); err != nil {
		t.Fatal(err)
	}
	start := command(t, service.one(t, "Service", "ExecStart"), runtime)
	workers := 0
	for i, a := range start {
		if a == "--listen" {
			t.Fatalf("web.service binds with --listen; a socket-activated service takes its socket from web.socket")
		}
		if a == "-n" && i+1 < len(start) {
			workers, _ = strconv.Atoi(start[i+1])
		}
	}
	if workers < 2 {
		t.Fatalf("web.service ExecStart %v: want -n N with N >= 2 to see the socket shared", start)
	}

	// ListenStream=8080 becomes a unix socket here.
	sock := filepath.Join(dir, "web.sock")
	notify := listenNotify(t, dir)
	argv := append([]string{activate, "-l", sock, "--fdname=" + name, "-E", sdnotify.EnvNotifySocket + "=" + notify.path}, start...)
	master := startProcess(t, nil, argv...)
	// The file exists from bind(); a dial before listen() is refused, so
	// wait for the kernel to list the socket as listening.
	e2etest.WaitFor(t, 10*time.Second, "systemd-socket-activate to listen on "+sock, func() bool {
		return unixListening(t, sock)
	})

	// The first connection is what starts the service; it waits in the
	// socket's queue and is answered by a worker.
	c := unixClient(sock)
	if _, err := ask(c); err != nil {
		t.Fatalf("first connection, which starts the service: %v\n%s", err, master.stderr)
	}
	pid := master.cmd.Process.Pid // systemd-socket-activate execs in place
	m := notify.next(t, pid, 10*time.Second, "READY=1")
	if !m.Ready || m.MainPID != pid {
		t.Fatalf("first notification %q, want READY=1 with MAINPID=%d", m.Format(), pid)
	}
	seeGeneration(t, c, workers, "1")
	if a, err := ask(c); err != nil || a.listener != name {
		t.Fatalf("answer %+v (%v): want listener=%s, FileDescriptorName= passed through LISTEN_FDNAMES to the worker", a, err, name)
	}

	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if status := master.exitStatus(t, duration(t, service, "TimeoutStopSec")); status != 0 {
		t.Fatalf("master exited %d after SIGTERM, want 0 (examples/httpworker drains and exits 0); output:\n%s", status, master.stderr)
	}
}

// unixListening reports whether /proc/net/unix lists a listening socket
// (flag __SO_ACCEPTCON, 0x10000) bound to path.
func unixListening(t *testing.T, path string) bool {
	t.Helper()
	b, err := os.ReadFile("/proc/net/unix")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) < 8 || f[7] != path {
			continue
		}
		flags, err := strconv.ParseUint(f[3], 16, 32)
		if err == nil && flags&0x10000 != 0 {
			return true
		}
	}
	return false
}
