// Package systemd runs the units of docs/systemd.md under a real systemd:
// a Debian bookworm rootfs made with debootstrap from the Debian mirror
// apt uses, booted with systemd-nspawn so that its systemd is PID 1 of
// the container, with the release build of mworker and the units exactly
// as the docs write them installed into it. The tests drive systemctl
// inside the container with nsenter (no machined, no bus on the host) and
// reach the service through the container's own network namespace.
//
// They run only with MWORKER_E2E_SYSTEMD=1: the first debootstrap takes
// minutes (2 to 6 measured), more than go test ./... may spend in CI.
// They need root, systemd-nspawn (Debian: systemd-container), debootstrap
// and the mirror; MWORKER_E2E_SYSTEMD=1 sh scripts/test-deps.sh installs
// the packages. Where any of them is missing, each test skips and says
// which. The rootfs is built once and kept under the temporary directory
// for later runs.
package systemd

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mworker/mworker/internal/e2etest"
)

// envGate must be 1 for the tests to run.
const envGate = "MWORKER_E2E_SYSTEMD"

var (
	// mworkerPath is the binary under test, built as a release is built
	// (static, so that it runs in the rootfs whatever the host has).
	mworkerPath string
	// repoRoot is the module root; the units are read from its docs/.
	repoRoot string
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	root, err := e2etest.ModuleRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e/systemd:", err)
		return 1
	}
	repoRoot = root
	if os.Getenv(envGate) != "1" {
		return m.Run() // every test skips, saying how to run it
	}
	dir, err := os.MkdirTemp("", "mworker-systemd-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e/systemd:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	mworkerPath = filepath.Join(dir, "mworker")
	build := exec.Command("go", "build", "-trimpath", "-o", mworkerPath, "./cmd/mworker")
	build.Dir = root
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e/systemd: go build ./cmd/mworker: %v\n%s", err, out)
		return 1
	}
	return m.Run()
}

// Paths the documented units use; the tests install the binaries there.
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

// unitValues returns the values of key (in any section) in a unit file,
// in order; enough for User= and Group=.
func unitValues(text, key string) []string {
	var out []string
	for line := range strings.SplitSeq(text, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), key+"="); ok {
			out = append(out, strings.TrimSpace(v))
		}
	}
	return out
}
