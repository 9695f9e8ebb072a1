// Package podman runs the image of docs/containers.md under a real
// container engine: rootful podman with runc. The image is the
// Dockerfile of the docs with its FROM lines replaced by scratch and its
// COPY --from=build lines by a COPY of binaries built here as the build
// stage builds them (static, -trimpath); every other line is kept as the
// docs write it. The application is mworker's demo worker (testdata/app),
// which can also play a worker that ignores SIGTERM. The tests reach the
// service through the container's own network namespace (--network none:
// only lo, so no bridge or firewall is needed).
//
// They run only with MWORKER_E2E_PODMAN=1: they take about four minutes,
// more than go test ./... may spend in CI. They need root, podman and runc
// (MWORKER_E2E_PODMAN=1 sh scripts/test-deps.sh installs them); where
// podman cannot run a container here, each test skips and says why.
package podman

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/mworker/mworker/internal/e2etest"
)

var (
	repoRoot string
	// work holds the build context and containers.conf.
	work string
	// image is the tag of the image the tests build, once.
	image = fmt.Sprintf("localhost/mworker-e2e:%d", os.Getpid())
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	root, err := e2etest.ModuleRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e/podman:", err)
		return 1
	}
	repoRoot = root
	if work, err = os.MkdirTemp("", "mworker-podman-"); err != nil {
		fmt.Fprintln(os.Stderr, "e2e/podman:", err)
		return 1
	}
	defer os.RemoveAll(work)
	code := m.Run()
	if built.done {
		podman("rmi", "-f", image)
	}
	return code
}

// containersConf is what podman needs on this kind of machine, given to
// it in CONTAINERS_CONF (read with the system's files, over them):
//   - runc: crun refuses a host with hybrid cgroups (v1 controllers and
//     a v2 hierarchy under unified/): "cgroups in hybrid mode not
//     supported, drop all controllers from cgroupv2";
//   - cgroupfs: there is no systemd on the host to ask for a scope;
//   - events in a file: there is no journald either;
//   - ulimits of 4096, or the caller's hard limits if lower: podman's
//     defaults raise RLIMIT_NOFILE and RLIMIT_NPROC for the container,
//     which runc cannot do without CAP_SYS_RESOURCE ("error setting
//     rlimit type 7: operation not permitted"); here even the caller's
//     own hard RLIMIT_NPROC was refused.
func containersConf() string {
	limit := func(res int) uint64 {
		var r syscall.Rlimit
		if err := syscall.Getrlimit(res, &r); err != nil || r.Max > 4096 {
			return 4096
		}
		return r.Max
	}
	const rlimitNPROC = 6
	return fmt.Sprintf(`[containers]
default_ulimits = ["nofile=%d:%d", "nproc=%d:%d"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
`, limit(syscall.RLIMIT_NOFILE), limit(syscall.RLIMIT_NOFILE), limit(rlimitNPROC), limit(rlimitNPROC))
}

// podman runs podman with containersConf and returns its output, stdout
// and stderr together.
func podman(args ...string) (string, error) {
	cmd := exec.Command("podman", args...)
	cmd.Env = append(os.Environ(), "CONTAINERS_CONF="+filepath.Join(work, "containers.conf"))
	out, err := cmd.CombinedOutput()
	return string(out), err
}

var built struct {
	once       sync.Once
	done       bool
	skip       string
	err        error
	dockerfile string
	control    string // the --control path of the ENTRYPOINT
}

// requireImage builds the image from the Dockerfile of the docs once, or
// skips the test saying why podman cannot run here.
func requireImage(t *testing.T) {
	t.Helper()
	built.once.Do(func() { built.skip, built.err = buildImage(t) })
	switch {
	case built.skip != "":
		t.Skip(built.skip)
	case built.err != nil:
		t.Fatal(built.err)
	}
}

// envGate must be 1 for the tests to run.
const envGate = "MWORKER_E2E_PODMAN"

func buildImage(t *testing.T) (skip string, err error) {
	if os.Getenv(envGate) != "1" {
		return envGate + " is not 1: these tests build an image and run it under podman for about four minutes; run them with " +
			envGate + "=1 sh scripts/test-deps.sh && " + envGate + "=1 go test -count=1 -v ./e2e/podman (docs/containers.md, What was checked)", nil
	}
	if os.Geteuid() != 0 {
		return "not root: these tests use rootful podman (run go test as root)", nil
	}
	for _, tool := range []string{"podman", "runc"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Sprintf("%s is not installed (Debian: apt-get install podman runc catatonit, or run scripts/test-deps.sh): %v", tool, err), nil
		}
	}
	if err := os.WriteFile(filepath.Join(work, "containers.conf"), []byte(containersConf()), 0o644); err != nil {
		return "", err
	}
	ctx := filepath.Join(work, "context")
	// /tmp, for the control socket, as the distroless image has it.
	if err := os.MkdirAll(filepath.Join(ctx, "rootfs", "tmp"), 0o755); err != nil {
		return "", err
	}
	if err := os.Chmod(filepath.Join(ctx, "rootfs", "tmp"), os.ModePerm|os.ModeSticky); err != nil {
		return "", err
	}
	for _, b := range []struct{ name, pkg string }{{"mworker", "./cmd/mworker"}, {"app", "./e2e/podman/testdata/app"}} {
		cmd := exec.Command("go", "build", "-trimpath", "-o", filepath.Join(ctx, b.name), b.pkg)
		cmd.Dir = repoRoot
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("go build %s: %v\n%s", b.pkg, err, out)
		}
	}
	dockerfile, control, err := adaptDockerfile()
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(ctx, "Dockerfile"), []byte(dockerfile), 0o644); err != nil {
		return "", err
	}
	built.dockerfile, built.control = dockerfile, control
	if out, err := podman("build", "-t", image, ctx); err != nil {
		return "", fmt.Errorf("podman build of\n%s\nfailed: %v\n%s", dockerfile, err, tail(out, 20))
	}
	built.done = true
	// Can podman run a container here at all?
	if out, err := podman("run", "--rm", "--network", "none", "--entrypoint", "/usr/local/bin/mworker", image, "--version"); err != nil {
		return fmt.Sprintf("podman cannot run a container on this machine (%v):\n%s", err, tail(out, 10)), nil
	}
	t.Logf("image %s built from the Dockerfile of docs/containers.md, adapted:\n%s", image, dockerfile)
	return "", nil
}

// adaptDockerfile returns the Dockerfile of docs/containers.md with its
// image stage built FROM scratch out of the binaries in the build
// context, and the --control path of its ENTRYPOINT.
func adaptDockerfile() (string, string, error) {
	b, err := os.ReadFile(filepath.Join(repoRoot, "docs", "containers.md"))
	if err != nil {
		return "", "", err
	}
	_, rest, ok := strings.Cut(string(b), "```dockerfile\n")
	if !ok {
		return "", "", fmt.Errorf("docs/containers.md has no ```dockerfile block")
	}
	block, _, ok := strings.Cut(rest, "```")
	if !ok {
		return "", "", fmt.Errorf("docs/containers.md: the ```dockerfile block does not end")
	}
	// The last stage is the image; the build stage is replaced by the
	// binaries built here.
	var stage []string
	for line := range strings.SplitSeq(block, "\n") {
		trimmed := strings.TrimSpace(line)
		if strings.HasSuffix(trimmed, `\`) {
			return "", "", fmt.Errorf("Dockerfile line %q continues on the next; this reader takes one instruction per line", line)
		}
		if k, _, _ := strings.Cut(trimmed, " "); strings.EqualFold(k, "FROM") {
			stage = nil
		}
		stage = append(stage, line)
	}
	var out []string
	control := ""
	for _, line := range stage {
		trimmed := strings.TrimSpace(line)
		k, args, _ := strings.Cut(trimmed, " ")
		switch strings.ToUpper(k) {
		case "FROM":
			out = append(out, "FROM scratch", "COPY rootfs/ /")
			// distroless's :nonroot images run as uid 65532.
			if base, _, _ := strings.Cut(args, " "); strings.HasSuffix(base, ":nonroot") {
				out = append(out, "USER 65532:65532")
			}
			continue
		case "COPY":
			f := strings.Fields(args)
			if len(f) >= 3 && strings.HasPrefix(f[0], "--from=") {
				srcs := f[1 : len(f)-1]
				for i, s := range srcs {
					srcs[i] = filepath.Base(s)
				}
				out = append(out, "COPY "+strings.Join(srcs, " ")+" "+f[len(f)-1])
				continue
			}
		case "ENTRYPOINT":
			var argv []string
			if err := json.Unmarshal([]byte(args), &argv); err != nil {
				return "", "", fmt.Errorf("ENTRYPOINT %s is not exec form: %v", args, err)
			}
			for i, a := range argv {
				if a == "--control" && i+1 < len(argv) {
					control = argv[i+1]
				}
			}
		}
		out = append(out, line)
	}
	if control == "" {
		return "", "", fmt.Errorf("the ENTRYPOINT of docs/containers.md has no --control: podman exec ... mworker reload needs one")
	}
	return strings.Join(out, "\n") + "\n", control, nil
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
