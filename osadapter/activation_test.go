package osadapter

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mworker/mworker/internal/e2etest"
)

// httpGet asks for / through dial and returns the demo worker's line.
func httpGet(dial func() (net.Conn, error)) (string, error) {
	c := &http.Client{
		Transport: &http.Transport{
			DialContext:       func(context.Context, string, string) (net.Conn, error) { return dial() },
			DisableKeepAlives: true,
		},
		Timeout: 10 * time.Second,
	}
	resp, err := c.Get("http://mworker/")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("status %s, body %q, %v", resp.Status, b, err)
	}
	return strings.TrimSpace(string(b)), nil
}

// A socket-activated master: the test binds a TCP socket and starts the
// master as systemd would (fd 3, LISTEN_FDS, LISTEN_FDNAMES, LISTEN_PID of
// the master's own pid, set by a shell before it execs the master). The
// master passes that socket, then the one of --listen, to every demo
// worker, before and after a reload.
func TestRealSocketActivation(t *testing.T) {
	t.Parallel()
	bin := testBinary(t)
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f, err := tcp.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	addr := tcp.Addr().String()
	tcp.Close() // f keeps the socket listening; the test no longer accepts
	defer f.Close()

	unixPath := filepath.Join(t.TempDir(), "http.sock")
	m := startMasterArgv(t, []string{"/bin/sh", "-c", `LISTEN_PID=$$ exec "$0" master`, bin}, testMaster{
		Workers: 2, Ready: "notify", Command: []string{bin, "demo-worker"},
		Listen:     []string{"unix://" + unixPath},
		Env:        []string{"LISTEN_FDS=1", "LISTEN_FDNAMES=web"},
		ExtraFiles: []*os.File{f},
	})
	f.Close() // only the master holds it now
	viaTCP := func() (net.Conn, error) { return net.DialTimeout("tcp", addr, 5*time.Second) }
	viaUnix := func() (net.Conn, error) { return net.DialTimeout("unix", unixPath, 5*time.Second) }

	e2etest.WaitFor(t, 20*time.Second, "the first generation ready", func() bool { return m.count("all workers ready") == 1 })
	for _, gen := range []int{1, 2} {
		if gen == 2 {
			m.signal(syscall.SIGUSR2)
			// Old workers accept until they drain: ask once they are gone.
			e2etest.WaitFor(t, 20*time.Second, "the reload", func() bool { return m.count("old worker exited") == 2 })
		}
		for name, dial := range map[string]func() (net.Conn, error){"activated tcp": viaTCP, "--listen unix": viaUnix} {
			line, err := httpGet(dial)
			if err != nil || !strings.HasPrefix(line, fmt.Sprintf("generation=%d ", gen)) {
				t.Errorf("generation %d, through the %s socket: %q, %v; want an answer from generation %d", gen, name, line, err, gen)
			}
		}
	}
	if !strings.Contains(m.log(), "name=web") {
		t.Errorf("the master did not log the activated socket by its LISTEN_FDNAMES name")
	}
	m.signal(syscall.SIGTERM)
	if got := m.wait(20 * time.Second); got != 0 {
		t.Errorf("master exited %d, want 0 (demo workers drain and exit 0)", got)
	}
}
