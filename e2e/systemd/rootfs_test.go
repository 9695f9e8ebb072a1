package systemd

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// suite is the Debian release of the rootfs: its systemd (252) is the one
// the docs were checked with.
const suite = "bookworm"

// rootfsMarker is written into the rootfs last: a directory without it is
// an interrupted build and is built again.
const rootfsMarker = ".mworker-rootfs-complete"

var rootfs struct {
	once sync.Once
	path string
	skip string // why the machine cannot build or boot it
	err  error
}

// requireRootfs returns the path of a Debian rootfs with systemd, built
// with debootstrap on first use (once per machine: it is kept under the
// temporary directory), or skips the test saying what this machine lacks.
func requireRootfs(t *testing.T) string {
	t.Helper()
	rootfs.once.Do(func() {
		rootfs.path, rootfs.skip, rootfs.err = buildRootfs(t)
	})
	switch {
	case rootfs.skip != "":
		t.Skip(rootfs.skip)
	case rootfs.err != nil:
		t.Fatal(rootfs.err)
	}
	return rootfs.path
}

func buildRootfs(t *testing.T) (path, skip string, err error) {
	if os.Getenv(envGate) != "1" {
		return "", envGate + " is not 1: these tests debootstrap a Debian rootfs (minutes, the first time) and boot systemd in it; run them with " +
			envGate + "=1 sh scripts/test-deps.sh && " + envGate + "=1 go test -count=1 -v ./e2e/systemd (docs/systemd.md, What was checked)", nil
	}
	if os.Geteuid() != 0 {
		return "", "not root: systemd-nspawn --boot and debootstrap need root (run go test as root)", nil
	}
	for _, tool := range []struct{ bin, pkg string }{{"systemd-nspawn", "systemd-container"}, {"debootstrap", "debootstrap"}, {"nsenter", "util-linux"}} {
		if _, err := exec.LookPath(tool.bin); err != nil {
			return "", fmt.Sprintf("%s is not installed (Debian: apt-get install %s, or run scripts/test-deps.sh): %v", tool.bin, tool.pkg, err), nil
		}
	}
	path = filepath.Join(os.TempDir(), "mworker-e2e-"+suite+"-rootfs")
	// Several test processes may want it at once: one builds, the others
	// wait on the lock and find it complete.
	lock, err := os.OpenFile(path+".lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return "", "", err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", "", err
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	if _, err := os.Stat(filepath.Join(path, rootfsMarker)); err == nil {
		t.Logf("rootfs: reusing %s", path)
		return path, "", nil
	}

	mirror, why := debianMirror()
	if mirror == "" {
		return "", "no Debian mirror to debootstrap " + suite + " from: " + why, nil
	}
	tmp := path + ".tmp"
	if err := os.RemoveAll(tmp); err != nil {
		return "", "", err
	}
	os.RemoveAll(path)
	// minbase and systemd: systemctl talks to PID 1 over its private
	// socket as root, so no dbus is needed; nspawn --boot finds
	// /lib/systemd/systemd without systemd-sysv.
	args := []string{"--variant=minbase", "--include=systemd", suite, tmp, mirror}
	start := time.Now()
	out, err := exec.Command("debootstrap", args...).CombinedOutput()
	if err != nil {
		os.RemoveAll(tmp)
		return "", "", fmt.Errorf("debootstrap %s: %v\n%s", strings.Join(args, " "), err, tail(string(out), 20))
	}
	if err := os.WriteFile(filepath.Join(tmp, rootfsMarker), []byte(mirror+"\n"), 0o644); err != nil {
		return "", "", err
	}
	if err := os.Rename(tmp, path); err != nil {
		return "", "", err
	}
	t.Logf("rootfs: debootstrap %s from %s into %s took %v", suite, mirror, path, time.Since(start).Round(100*time.Millisecond))
	return path, "", nil
}

// debianMirror returns the Debian archive apt uses here (from the apt
// sources, one-line or deb822), checked to serve the suite: its Release
// file must say "Origin: Debian". It returns "" and why when none does.
func debianMirror() (string, string) {
	var uris []string
	files, _ := filepath.Glob("/etc/apt/sources.list.d/*")
	for _, f := range append([]string{"/etc/apt/sources.list"}, files...) {
		switch {
		case strings.HasSuffix(f, ".sources"):
			uris = append(uris, deb822URIs(f)...)
		case strings.HasSuffix(f, ".list"):
			uris = append(uris, oneLineURIs(f)...)
		}
	}
	if len(uris) == 0 {
		return "", "apt's sources list no \"deb\" entry for suite " + suite
	}
	client := &http.Client{Timeout: 20 * time.Second}
	var tried []string
	for _, u := range uris {
		u = strings.TrimSuffix(u, "/")
		release := u + "/dists/" + suite + "/Release"
		resp, err := client.Get(release)
		if err != nil {
			tried = append(tried, err.Error())
			continue
		}
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK && strings.Contains("\n"+string(b), "\nOrigin: Debian\n") {
			return u, ""
		}
		tried = append(tried, fmt.Sprintf("%s: %s, not a Debian Release file", release, resp.Status))
	}
	return "", "apt's sources for " + suite + " cannot be reached: " + strings.Join(tried, "; ")
}

// deb822URIs reads the URIs of the "deb" stanzas of a .sources file that
// list the suite.
func deb822URIs(path string) []string {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	var out []string
	for stanza := range strings.SplitSeq(string(b), "\n\n") {
		fields := make(map[string][]string)
		for line := range strings.SplitSeq(stanza, "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && !strings.HasPrefix(line, "#") && !strings.HasPrefix(line, " ") {
				fields[strings.ToLower(strings.TrimSpace(k))] = strings.Fields(v)
			}
		}
		if slices.Contains(fields["types"], "deb") && slices.Contains(fields["suites"], suite) {
			out = append(out, fields["uris"]...)
		}
	}
	return out
}

// oneLineURIs reads "deb [options] URI SUITE COMPONENTS..." lines that
// name the suite.
func oneLineURIs(path string) []string {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if !strings.HasPrefix(line, "deb ") {
			continue
		}
		line = strings.TrimSpace(strings.TrimPrefix(line, "deb "))
		if strings.HasPrefix(line, "[") {
			_, line, _ = strings.Cut(line, "]")
		}
		f := strings.Fields(line)
		if len(f) >= 2 && f[1] == suite {
			out = append(out, f[0])
		}
	}
	return out
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
