package podman

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mworker/mworker/internal/e2etest"
)

// ct is a container of the image, removed when the test ends.
type ct struct {
	t    *testing.T
	name string
}

// stopGrace is podman stop's grace period: above the ENTRYPOINT's
// --stop-timeout (20s), as the table of docs/containers.md says.
const stopGrace = "30"

// runContainer starts a container of the image, with the image's
// ENTRYPOINT and STOPSIGNAL, and extra podman run options.
func runContainer(t *testing.T, extra ...string) *ct {
	t.Helper()
	name := regexp.MustCompile(`[^a-z0-9]+`).ReplaceAllString(strings.ToLower(strings.TrimPrefix(t.Name(), "Test")), "-")
	c := &ct{t: t, name: fmt.Sprintf("mworker-e2e-%d-%s", os.Getpid(), name)}
	t.Cleanup(func() {
		if out, err := podman("rm", "-f", "-t", "0", c.name); err != nil {
			t.Errorf("podman rm -f %s: %v\n%s", c.name, err, out)
		}
	})
	args := append([]string{"run", "-d", "--name", c.name, "--network", "none"}, extra...)
	c.podman(append(args, image)...)
	return c
}

// podman runs podman and fails the test if it fails.
func (c *ct) podman(args ...string) string {
	c.t.Helper()
	out, err := podman(args...)
	if err != nil {
		c.t.Fatalf("podman %s: %v\n%s\nlogs:\n%s", strings.Join(args, " "), err, out, c.logs(30))
	}
	return strings.TrimSpace(out)
}

func (c *ct) logs(n int) string {
	out, _ := podman("logs", c.name)
	return tail(out, n)
}

// inspect returns one field of podman inspect, a Go template.
func (c *ct) inspect(field string) string {
	c.t.Helper()
	return c.podman("inspect", "-f", "{{"+field+"}}", c.name)
}

// dial connects from inside the container's network namespace: a thread
// enters it, makes the socket, and ends with its goroutine (it is never
// unlocked, so the runtime throws the thread away rather than reuse it in
// the wrong namespace).
func (c *ct) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	pid, err := strconv.Atoi(c.inspect(".State.Pid"))
	if err != nil || pid == 0 {
		return nil, fmt.Errorf("container %s has no process (pid %d, %v)", c.name, pid, err)
	}
	return e2etest.DialInNetns(ctx, pid, network, addr)
}

// addr is the ENTRYPOINT's --listen :8080, in the container's network
// namespace.
const addr = "127.0.0.1:8080"

// get sends GET path and returns the response, its body still to read.
func (c *ct) get(path string, timeout time.Duration) (*http.Response, error) {
	client := &http.Client{Timeout: timeout, Transport: &http.Transport{DialContext: c.dial, DisableKeepAlives: true}}
	return client.Get("http://" + addr + path)
}

// answer sends GET / and returns the body.
func (c *ct) answer() (string, error) {
	resp, err := c.get("/", 5*time.Second)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
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
func (c *ct) waitGeneration(gen string) {
	c.t.Helper()
	var last string
	var lastErr error
	if !e2etest.Poll(30*time.Second, func() bool {
		last, lastErr = c.answer()
		return lastErr == nil && generation(last) == gen
	}) {
		c.t.Fatalf("no answer from generation %s within 30s; last answer %q, error %v\nlogs:\n%s", gen, last, lastErr, c.logs(30))
	}
}

// stop runs podman stop with the documented grace period and returns the
// container's exit code and how long the stop took.
func (c *ct) stop() (int, time.Duration) {
	c.t.Helper()
	start := time.Now()
	c.podman("stop", "-t", stopGrace, c.name)
	took := time.Since(start)
	code, err := strconv.Atoi(c.inspect(".State.ExitCode"))
	if err != nil {
		c.t.Fatal(err)
	}
	return code, took
}
