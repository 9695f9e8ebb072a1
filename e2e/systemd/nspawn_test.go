package systemd

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mworker/mworker/internal/e2etest"
)

// container is a booted systemd-nspawn container whose systemd is PID 1.
type container struct {
	t      *testing.T
	cmd    *exec.Cmd
	done   chan struct{}
	leader int // the host pid of its PID 1
	log    string
}

// bootTimeout bounds the boot to a running (or degraded) system.
const bootTimeout = 2 * time.Minute

// boot starts systemd in the rootfs as PID 1 of a container and waits
// until it has booted. The container writes into a tmpfs over the rootfs
// (--volatile=overlay), so the rootfs stays as built and several
// containers boot from it at once; it has a network namespace of its own
// with only lo (--private-network), so each can serve :8080. It is not
// registered with machined and stays in the caller's cgroup
// (--register=no --keep-unit): no bus or systemd is needed on the host.
// Cleanup powers it off, and kills it if that does not end it.
func boot(t *testing.T, rootfs string) *container {
	t.Helper()
	c := &container{t: t, done: make(chan struct{}), log: filepath.Join(t.TempDir(), "console.log")}
	logf, err := os.Create(c.log)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	name := fmt.Sprintf("mw%d-%s", os.Getpid(), strings.ToLower(strings.TrimPrefix(t.Name(), "Test")))
	if len(name) > 60 {
		name = name[:60]
	}
	// With --keep-unit, nspawn puts the container in "payload" under its
	// own cgroup, and the container's systemd makes that its root: two
	// containers started from one cgroup would share their services'
	// cgroups, and stopping app.service in one would kill the other's. So
	// each starts from a cgroup of its own, made here and removed after.
	cgroups := ownCgroups(t, name)
	wrapper := `for cg in "$CGROUPS"; do echo $$ > "$cg/cgroup.procs" || exit 1; done; exec "$@"`
	c.cmd = exec.Command("/bin/sh", "-c", strings.ReplaceAll(wrapper, `"$CGROUPS"`, shellWords(cgroups)), "sh",
		"systemd-nspawn", "--boot", "--register=no", "--keep-unit",
		"--volatile=overlay", "--private-network", "--console=read-only",
		"-D", rootfs, "-M", name)
	c.cmd.Stdout, c.cmd.Stderr = logf, logf
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	start := time.Now()
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { c.cmd.Wait(); close(c.done) }()
	t.Cleanup(func() {
		c.shutdown()
		for _, cg := range cgroups {
			removeCgroup(cg)
		}
	})

	// PID 1 of the container is the child of nspawn that is pid 1 in a
	// pid namespace of its own.
	ok := e2etest.Poll(bootTimeout, func() bool {
		select {
		case <-c.done:
			return true
		default:
		}
		c.leader = containerInit(c.cmd.Process.Pid)
		if c.leader == 0 {
			return false
		}
		out, _ := c.output("systemctl", "is-system-running")
		state := strings.TrimSpace(out)
		return state == "running" || state == "degraded"
	})
	select {
	case <-c.done:
		b, _ := os.ReadFile(c.log)
		t.Skipf("systemd-nspawn could not boot the rootfs here (%v); its output ends:\n%s", c.cmd.ProcessState, tail(string(b), 15))
	default:
	}
	if !ok {
		out, _ := c.output("systemctl", "list-jobs")
		b, _ := os.ReadFile(c.log)
		t.Fatalf("the container's systemd did not finish booting within %v; jobs:\n%s\nconsole:\n%s", bootTimeout, out, tail(string(b), 20))
	}
	if out, _ := c.output("systemctl", "is-system-running"); strings.TrimSpace(out) == "degraded" {
		failed, _ := c.output("systemctl", "--failed", "--no-legend")
		t.Logf("container booted degraded (units that fail in a container; not ours):\n%s", failed)
	}
	t.Logf("container %s booted in %v (PID 1 is host pid %d)", name, time.Since(start).Round(10*time.Millisecond), c.leader)
	return c
}

// containerInit returns the host pid of the child of pid that is PID 1 of
// its own pid namespace, or 0.
func containerInit(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	if err != nil {
		return 0
	}
	for _, f := range strings.Fields(string(b)) {
		status, err := os.ReadFile("/proc/" + f + "/status")
		if err != nil {
			continue
		}
		for line := range strings.SplitSeq(string(status), "\n") {
			if ns, ok := strings.CutPrefix(line, "NSpid:"); ok {
				if ids := strings.Fields(ns); len(ids) == 2 && ids[1] == "1" {
					n, _ := strconv.Atoi(f)
					return n
				}
			}
		}
	}
	return 0
}

// shutdown powers the container off as a host shutdown would (nspawn
// turns SIGTERM into SIGRTMIN+3 for the container's systemd), and kills
// its PID 1, which ends every process in it, if it has not ended within a
// minute.
func (c *container) shutdown() {
	select {
	case <-c.done:
		return
	default:
	}
	c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
		return
	case <-time.After(time.Minute):
	}
	c.t.Errorf("the container did not power off within a minute of SIGTERM to systemd-nspawn: killing it")
	if c.leader != 0 {
		syscall.Kill(c.leader, syscall.SIGKILL)
	}
	c.cmd.Process.Kill()
	<-c.done
}

// output runs argv inside the container (all its namespaces, its root)
// and returns what it printed, stdout and stderr together.
func (c *container) output(argv ...string) (string, error) {
	cmd := exec.Command("nsenter", append([]string{"-t", strconv.Itoa(c.leader), "-a", "--"}, argv...)...)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8", "SYSTEMD_PAGER=", "SYSTEMD_COLORS=0"}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// run is output that fails the test when argv fails.
func (c *container) run(argv ...string) string {
	c.t.Helper()
	out, err := c.output(argv...)
	if err != nil {
		c.t.Fatalf("in the container, %s: %v\n%s", strings.Join(argv, " "), err, out)
	}
	return out
}

// sh runs a shell command line inside the container.
func (c *container) sh(script string) (string, error) {
	return c.output("/bin/sh", "-c", script)
}

// path is where path inside the container is seen from the host.
func (c *container) path(p string) string {
	return fmt.Sprintf("/proc/%d/root%s", c.leader, p)
}

// show returns properties of a unit, from systemctl show.
func (c *container) show(unit string, props ...string) map[string]string {
	c.t.Helper()
	out := c.run("systemctl", "show", "-p", strings.Join(props, ","), unit)
	m := make(map[string]string)
	for line := range strings.SplitSeq(strings.TrimSpace(out), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			m[k] = v
		}
	}
	return m
}

// journal returns the unit's journal, messages only, after making
// journald write out what it has received.
func (c *container) journal(unit string) string {
	c.t.Helper()
	c.output("journalctl", "--sync")
	return c.run("journalctl", "--no-pager", "-o", "cat", "-u", unit)
}

// dial connects from inside the container's network namespace: a thread
// enters it, makes the socket, and ends with its goroutine (it is never
// unlocked, so the runtime throws the thread away rather than reuse it in
// the wrong namespace). The socket stays in the container's namespace.
func (c *container) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	return e2etest.DialInNetns(ctx, c.leader, network, addr)
}

// get sends GET path to addr in the container and returns the answer's
// body.
func (c *container) get(addr, path string, timeout time.Duration) (string, error) {
	client := &http.Client{Timeout: timeout, Transport: &http.Transport{DialContext: c.dial, DisableKeepAlives: true}}
	resp, err := client.Get("http://" + addr + path)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("%s: %s", resp.Status, b)
	}
	return string(b), err
}

// ownCgroups makes a cgroup named name under the test process's own in
// each hierarchy that systemd manages (name=systemd of a v1 or hybrid
// host, and the v2 one), and returns their directories.
func ownCgroups(t *testing.T, name string) []string {
	t.Helper()
	mounts := map[string]string{} // hierarchy as /proc/self/cgroup names it → mount point
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(string(mi), "\n") {
		pre, post, ok := strings.Cut(line, " - ")
		f, g := strings.Fields(pre), strings.Fields(post)
		if !ok || len(f) < 5 || len(g) < 3 {
			continue
		}
		switch {
		case g[0] == "cgroup2":
			mounts[""] = f[4]
		case g[0] == "cgroup" && strings.Contains(","+g[2]+",", ",name=systemd,"):
			mounts["name=systemd"] = f[4]
		}
	}
	own, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	var dirs []string
	for line := range strings.SplitSeq(strings.TrimSpace(string(own)), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		if mnt, ok := mounts[parts[1]]; ok {
			dir := filepath.Join(mnt, parts[2], "mworker-e2e-"+name)
			if err := os.Mkdir(dir, 0o755); err != nil && !os.IsExist(err) {
				t.Skipf("cannot make a cgroup for the container (%v): systemd-nspawn would not boot it apart from the others", err)
			}
			dirs = append(dirs, dir)
		}
	}
	if len(dirs) == 0 {
		t.Skip("no systemd-managed cgroup hierarchy (cgroup2, or v1 name=systemd) is mounted here: systemd-nspawn cannot boot systemd")
	}
	return dirs
}

// removeCgroup removes a cgroup the container left, its children first.
func removeCgroup(dir string) {
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if e.IsDir() {
			removeCgroup(filepath.Join(dir, e.Name()))
		}
	}
	os.Remove(dir)
}

// shellWords quotes words for sh.
func shellWords(words []string) string {
	q := make([]string, len(words))
	for i, w := range words {
		q[i] = "'" + strings.ReplaceAll(w, "'", `'\''`) + "'"
	}
	return strings.Join(q, " ")
}
