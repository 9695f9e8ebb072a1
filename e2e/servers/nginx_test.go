package servers

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/mworker/mworker/internal/e2etest"
)

// nginxRecipe is the nginx recipe of docs/servers.md for t: nginx takes
// the listener from NGINX=3; (--fd-env), with no shell wrapper, drains on
// QUIT (TERM is its fast shutdown) and gets a non-blocking socket
// (--listen-nonblocking yes), as an nginx it inherits sockets from would
// have made it. Its answer names the pid of the nginx worker process (its
// configuration cannot read MWORKER_GENERATION), a child of mworker's
// worker: the load maps it to its generation.
func nginxRecipe(t *testing.T, options ...string) recipe {
	nginx := need(t, "nginx", "nginx-light")
	dir := t.TempDir()
	conf := filepath.Join(dir, "nginx.conf")
	// master_process on: nginx 1.22 crashes (SIGSEGV) at its first request
	// with master_process off and inherited sockets. The pid file is shared
	// by every instance: nothing reads it under mworker (it signals nginx
	// itself), and an instance that exits after another logs an alert that
	// it is gone.
	return recipe{
		workers: 2,
		options: append([]string{"--fd-env", "NGINX={fds:;};", "--stop-signal", "QUIT", "--ready", "500ms"}, options...),
		command: []string{nginx, "-p", dir, "-e", "stderr", "-c", conf},
		config: func(port int) {
			writeFile(t, conf, fmt.Sprintf(`daemon off;
master_process on;
worker_processes 1;
pid %[1]s/nginx.pid;
error_log stderr notice;
events { worker_connections 1024; }
http {
	access_log off;
	client_body_temp_path %[1]s/body;
	proxy_temp_path %[1]s/proxy;
	server {
		listen 127.0.0.1:%[2]d;
		location / { return 200 "pid $pid\n"; }
	}
}
`, dir, port))
		},
		reloads:   10,
		keepAlive: 4,
		clients:   4,
	}
}

var nginxBlocking = flag.Bool("nginx.blocking", false, "TestNginxNeedsNonblocking: also run nginx on blocking sockets and report its stalls")

// TestNginx runs the nginx recipe of docs/servers.md.
func TestNginx(t *testing.T) {
	t.Parallel()
	nginxRecipe(t, "--listen-nonblocking", "yes").run(t)
}

// TestNginxNeedsNonblocking: every nginx instance's worker is woken by
// each new connection, and one takes it. nginx makes the sockets it binds
// non-blocking and expects inherited ones to be (an nginx made them so);
// on a blocking socket the one that lost calls accept4 and blocks in the
// kernel, and serves none of its other connections until the next one
// arrives: a keep-alive request waits, and with no new connection, for
// ever (a CI run of TestNginx: three requests unanswered for 10 s, their
// nginx worker in inet_csk_accept). With --listen-nonblocking yes, every
// keep-alive connection answers at once after each new one.
//
// -nginx.blocking also runs it without: the stall is a race (both workers
// must be woken before either accepts), so that run reports how many
// rounds stalled and asserts nothing; 0 to 3 of 30 here.
func TestNginxNeedsNonblocking(t *testing.T) {
	t.Parallel()
	modes := []string{"yes"}
	if *nginxBlocking {
		modes = append(modes, "no")
	}
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			rc := nginxRecipe(t, "--listen-nonblocking", mode)
			m, _ := startMaster(t, rc)
			stalls := keepAliveStalls(t, m, 30)
			if mode == "yes" && stalls > 0 {
				t.Errorf("--listen-nonblocking yes: %d of 30 rounds left a keep-alive request unanswered for 5s", stalls)
			}
			t.Logf("--listen-nonblocking %s: %d of 30 rounds left a keep-alive request unanswered for 5s", mode, stalls)
			if st := m.stopWait(); st != 0 {
				t.Errorf("master exited %d after mworker stop --wait, want 0", st)
			}
		})
	}
}

// keepAliveStalls opens keep-alive connections until both nginx workers
// hold some, then, rounds times, makes one new connection and sends a
// request on every keep-alive connection: it returns in how many rounds
// one of them was not answered within 5 s (the connection is then
// dropped and another opened in its place).
func keepAliveStalls(t *testing.T, m *master, rounds int) int {
	t.Helper()
	type conn struct {
		c   net.Conn
		br  *bufio.Reader
		pid int
	}
	var conns []*conn
	defer func() {
		for _, c := range conns {
			c.c.Close()
		}
	}()
	pidOf := func(body []byte) int {
		p := pidRE.FindSubmatch(body)
		if p == nil {
			t.Fatalf("no pid N in the answer %q", body)
		}
		n, _ := strconv.Atoi(string(p[1]))
		return n
	}
	open := func() *conn {
		c, err := net.DialTimeout("tcp", m.addr, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		k := &conn{c: c, br: bufio.NewReader(c)}
		body, _, err := request(c, k.br, m.addr, true)
		if err != nil {
			t.Fatalf("a keep-alive connection's first request: %v", err)
		}
		k.pid = pidOf(body)
		return k
	}
	pids := func() []int {
		var ps []int
		for _, c := range conns {
			if !slices.Contains(ps, c.pid) {
				ps = append(ps, c.pid)
			}
		}
		return ps
	}
	for len(pids()) < 2 {
		if len(conns) == 64 {
			t.Fatalf("64 keep-alive connections, all held by nginx worker %v", pids())
		}
		conns = append(conns, open())
	}
	const burst = 8
	// A stall lasts until the next connection: none comes during the
	// wait. 5 s is far beyond an answer on a loaded machine.
	const stallAfter = 5 * time.Second
	stalls := 0
	for range rounds {
		// A burst of new connections: both workers are woken and accept
		// until the queue is empty, and one calls accept4 on it.
		var wg sync.WaitGroup
		errs := make(chan error, burst)
		for range burst {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c, err := net.DialTimeout("tcp", m.addr, 10*time.Second)
				if err != nil {
					errs <- err
					return
				}
				defer c.Close()
				if _, _, err := request(c, bufio.NewReader(c), m.addr, false); err != nil {
					errs <- fmt.Errorf("a fresh connection's request: %w", err)
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			// Its worker may have blocked in accept4 before answering.
			t.Logf("a new connection: %v", err)
		}
		stalled := false
		for i, k := range conns {
			k.c.SetDeadline(time.Now().Add(stallAfter))
			_, err := fmt.Fprintf(k.c, "GET / HTTP/1.1\r\nHost: %s\r\n\r\n", m.addr)
			if err == nil {
				var resp *http.Response
				if resp, err = http.ReadResponse(k.br, nil); err == nil {
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			}
			if err != nil {
				state := e2etest.Wchan(k.pid)
				t.Logf("keep-alive connection of nginx worker %d (in %s): %v", k.pid, state, err)
				stalled = true
				k.c.Close()
				conns[i] = open()
			}
		}
		if stalled {
			stalls++
		}
	}
	return stalls
}
