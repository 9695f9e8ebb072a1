package container

import (
	"debug/elf"
	"encoding/json"
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

// instruction is one line of a Dockerfile: its keyword and the rest.
type instruction struct{ keyword, args string }

// docDockerfile returns the instructions of the ```dockerfile block of
// docs/containers.md, comments dropped. The block uses no line
// continuations, which this reader refuses.
func docDockerfile(t *testing.T) []instruction {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, "docs", "containers.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(b), "```dockerfile\n")
	if !ok {
		t.Fatal("docs/containers.md has no ```dockerfile block")
	}
	block, _, ok := strings.Cut(rest, "```")
	if !ok {
		t.Fatal("docs/containers.md: the ```dockerfile block does not end")
	}
	var out []instruction
	for line := range strings.SplitSeq(block, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		if strings.HasSuffix(line, `\`) {
			t.Fatalf("Dockerfile line %q continues on the next; this reader takes one instruction per line", line)
		}
		k, a, _ := strings.Cut(line, " ")
		out = append(out, instruction{strings.ToUpper(k), strings.TrimSpace(a)})
	}
	return out
}

// TestDockerfileEntrypoint does what the Dockerfile of docs/containers.md
// asks of a container engine, as far as a machine without one can: its
// build stage's go build commands, as written; static binaries for the
// distroless image; its exec-form ENTRYPOINT as PID 1 of a fresh PID
// namespace; a reload as "docker exec ... mworker reload" would do it;
// its STOPSIGNAL to PID 1 as "docker stop" sends it, and exit status 0.
func TestDockerfileEntrypoint(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: this test rebuilds mworker and examples/httpworker with the Dockerfile's flags")
	}
	requirePIDNamespace(t)
	ins := docDockerfile(t)
	out := t.TempDir()
	var stage int
	var env []string
	var stopSignal, entrypoint string
	image := make(map[string]string) // path in the image → built file
	for _, in := range ins {
		switch in.keyword {
		case "FROM":
			stage++
		case "ENV":
			if stage == 1 {
				env = append(env, strings.Fields(in.args)...)
			}
		case "RUN":
			if stage != 1 || !strings.Contains(in.args, "go build") {
				continue
			}
			for cmd := range strings.SplitSeq(in.args, "&&") {
				argv := strings.Fields(cmd)
				if len(argv) < 2 || argv[0] != "go" || argv[1] != "build" || strings.ContainsAny(cmd, `"'$`) {
					t.Fatalf("RUN %q: this test runs only unquoted \"go build\" commands joined by &&", in.args)
				}
				for i, a := range argv {
					if p, ok := strings.CutPrefix(a, "/out/"); ok {
						argv[i] = filepath.Join(out, p)
					}
				}
				build := exec.Command(argv[0], argv[1:]...)
				build.Dir = repoRoot
				build.Env = append(os.Environ(), env...)
				if b, err := build.CombinedOutput(); err != nil {
					t.Fatalf("RUN %s: %v\n%s", cmd, err, b)
				}
			}
		case "COPY":
			f := strings.Fields(in.args)
			if stage != 2 || len(f) < 3 || !strings.HasPrefix(f[0], "--from=") {
				continue
			}
			dest := f[len(f)-1]
			for _, src := range f[1 : len(f)-1] {
				p, ok := strings.CutPrefix(src, "/out/")
				if !ok {
					t.Fatalf("COPY %s: this test knows only files built into /out/", in.args)
				}
				image[filepath.Join(dest, p)] = filepath.Join(out, p)
			}
		case "STOPSIGNAL":
			stopSignal = in.args
		case "ENTRYPOINT":
			entrypoint = in.args
		}
	}
	if stage != 2 {
		t.Fatalf("the Dockerfile has %d stages, want 2 (build, then the image)", stage)
	}
	for inImage, built := range image {
		f, err := elf.Open(built)
		if err != nil {
			t.Fatalf("%s (COPY to %s): %v", built, inImage, err)
		}
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP {
				t.Errorf("%s is dynamically linked: it would not start in a distroless static image", inImage)
			}
		}
		f.Close()
	}

	var argv []string
	if err := json.Unmarshal([]byte(entrypoint), &argv); err != nil || len(argv) == 0 {
		t.Fatalf("ENTRYPOINT %s is not exec form (a JSON array): %v", entrypoint, err)
	}
	dir := t.TempDir()
	sock, ctl := filepath.Join(dir, "http.sock"), ""
	workers := 1
	for i, a := range argv {
		if built, ok := image[a]; ok {
			argv[i] = built
		}
		if i+1 < len(argv) {
			switch a {
			case "--listen":
				argv[i+1] = "unix://" + sock
			case "--control":
				ctl = filepath.Join(dir, filepath.Base(argv[i+1]))
				argv[i+1] = ctl
			case "-n", "--workers":
				workers, _ = strconv.Atoi(argv[i+1])
			}
		}
	}
	if ctl == "" {
		t.Fatalf("ENTRYPOINT %s has no --control: docker exec ... mworker reload needs one", entrypoint)
	}
	sig := map[string]syscall.Signal{"SIGTERM": syscall.SIGTERM, "SIGINT": syscall.SIGINT, "SIGUSR1": syscall.SIGUSR1}[stopSignal]
	if sig == 0 {
		t.Fatalf("STOPSIGNAL %q: this test knows SIGTERM, SIGINT and SIGUSR1", stopSignal)
	}

	m := startPID1(t, nil, argv[0], argv[1:]...)
	c := unixClient(sock)
	e2etest.WaitFor(t, 10*time.Second, "the entrypoint to serve", func() bool {
		_, err := ask(c)
		return err == nil
	})
	seeGeneration(t, c, workers, "1")
	if b, err := exec.Command(argv[0], "reload", "--control", ctl).CombinedOutput(); err != nil {
		t.Fatalf("mworker reload, as docker exec would run it: %v\n%s", err, b)
	}
	seeGeneration(t, c, workers, "2")
	if err := syscall.Kill(m.host, sig); err != nil {
		t.Fatal(err)
	}
	if status := m.unshare.exitStatus(t, 30*time.Second); status != 0 {
		t.Fatalf("PID 1 exited %d after STOPSIGNAL %s, want 0; output:\n%s", status, stopSignal, m.unshare.stderr)
	}
}
