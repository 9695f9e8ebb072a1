package demo

import (
	"bufio"
	"bytes"
	"errors"
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

// envChild makes this test binary run Worker, as `mworker demo-worker`
// would after mworker's trampoline: LISTEN_PID is set to the child's own
// pid first, which only the child can do.
const envChild = "DEMO_TEST_WORKER"

func TestMain(m *testing.M) {
	if os.Getenv(envChild) == "1" {
		os.Setenv("LISTEN_PID", strconv.Itoa(os.Getpid()))
		os.Exit(Worker(nil, os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

func waitFor(t *testing.T, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v", d)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

type child struct {
	cmd    *exec.Cmd
	url    string
	addr   string
	exited chan error
	stderr *e2etest.SyncBuffer
}

// startWorker runs Worker in a child with a TCP listener as fd 3, and
// waits for its READY=1 on a notify socket named notifyAddr.
func startWorker(t *testing.T, notifyAddr string) *child {
	t.Helper()
	notify, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: notifyAddr, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer notify.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	// The child holds the only copy, so that its close shows as refusals.
	defer f.Close()

	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	c := &child{cmd: exec.Command(exe, "-test.run=^$"), addr: addr, url: "http://" + addr + "/", exited: make(chan error, 1), stderr: &e2etest.SyncBuffer{}}
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "LISTEN_") && !strings.HasPrefix(kv, "NOTIFY_SOCKET=") && !strings.HasPrefix(kv, "MWORKER_") {
			env = append(env, kv)
		}
	}
	c.cmd.Env = append(env, envChild+"=1", "LISTEN_FDS=1", "LISTEN_FDNAMES=http",
		"MWORKER_GENERATION=7", "MWORKER_SLOT=1", "NOTIFY_SOCKET="+notifyAddr)
	c.cmd.ExtraFiles = []*os.File{f}
	c.cmd.Stderr = c.stderr
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { c.exited <- c.cmd.Wait() }()
	t.Cleanup(func() {
		c.cmd.Process.Kill()
		<-c.exited
	})

	notify.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 512)
	n, _, err := notify.ReadFrom(buf)
	if err != nil {
		t.Fatalf("no READY=1 from the worker: %v; stderr: %s", err, c.stderr.String())
	}
	if got := string(buf[:n]); got != "READY=1\nSTATUS=serving" {
		t.Fatalf("notify datagram %q, want READY=1 and STATUS=serving", got)
	}
	return c
}

// wait returns the child's exit status once it has exited.
func (c *child) wait(t *testing.T) int {
	t.Helper()
	select {
	case err := <-c.exited:
		c.exited <- err // for the cleanup
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode()
		}
		if err != nil {
			t.Fatal(err)
		}
		return 0
	case <-time.After(10 * time.Second):
		t.Fatalf("worker did not exit; stderr: %s", c.stderr.String())
		return -1
	}
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

func TestWorkerServesAfterReady(t *testing.T) {
	for _, tc := range []struct{ name, notify string }{
		{"path", filepath.Join(t.TempDir(), "notify")},
		{"abstract", fmt.Sprintf("@mworker-demo-test-%d-%d", os.Getpid(), time.Now().UnixNano())},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := startWorker(t, tc.notify)
			code, body := get(t, c.url)
			if want := fmt.Sprintf("generation=7 slot=1 pid=%d\n", c.cmd.Process.Pid); code != 200 || body != want {
				t.Fatalf("GET /: %d %q, want 200 %q", code, body, want)
			}
			if code, body := get(t, c.url+"?sleep=forever"); code != 400 || !strings.Contains(body, `bad sleep "forever"`) {
				t.Fatalf("GET ?sleep=forever: %d %q, want 400 naming the bad value", code, body)
			}
			c.cmd.Process.Signal(syscall.SIGTERM)
			if code := c.wait(t); code != 0 {
				t.Fatalf("exit %d after SIGTERM, want 0; stderr: %s", code, c.stderr.String())
			}
		})
	}
}

func TestWorkerDrainsOnStop(t *testing.T) {
	c := startWorker(t, filepath.Join(t.TempDir(), "notify"))

	// An idle keep-alive connection: one request answered, the next never sent.
	idle, err := net.Dial("tcp", c.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	idle.Write([]byte("GET / HTTP/1.1\r\nHost: demo\r\n\r\n"))
	br := bufio.NewReader(idle)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.ReadAll(resp.Body)
	if resp.Close {
		t.Fatal("setup: the worker did not keep the connection alive")
	}

	// An in-flight request: its header is back, its body comes after 2s.
	slowClient := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	slow, err := slowClient.Get(c.url + "?sleep=2s")
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Body.Close()

	c.cmd.Process.Signal(syscall.SIGTERM)

	// New connections are refused while the slow request is still running.
	waitFor(t, 10*time.Second, func() bool {
		conn, err := net.Dial("tcp", c.addr)
		if err == nil {
			conn.Close()
		}
		return errors.Is(err, syscall.ECONNREFUSED)
	})
	select {
	case err := <-c.exited:
		t.Fatalf("worker exited (%v) before its in-flight request finished", err)
	default:
	}

	// The idle connection is closed cleanly: EOF, not a reset.
	idle.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := br.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("idle keep-alive connection: read %d, %v; want a clean EOF", n, err)
	}

	body, err := io.ReadAll(slow.Body)
	if want := fmt.Sprintf("generation=7 slot=1 pid=%d\n", c.cmd.Process.Pid); err != nil || string(body) != want {
		t.Fatalf("in-flight request: %q, %v; want %q", body, err, want)
	}
	if code := c.wait(t); code != 0 {
		t.Fatalf("exit %d after draining, want 0; stderr: %s", code, c.stderr.String())
	}
}

func TestWorkerRefusesMissingListeners(t *testing.T) {
	t.Setenv("LISTEN_FDNAMES", "")
	for _, tc := range []struct {
		fds, pid string
		code     int
		msg      string
	}{
		{"", "", 1, "no listener: LISTEN_FDS is not set; run it under mworker run --listen ADDR"},
		{"1", "1", 1, "no listener: LISTEN_FDS=1 is for pid 1, not this process"},
	} {
		t.Setenv("LISTEN_FDS", tc.fds)
		t.Setenv("LISTEN_PID", tc.pid)
		if tc.fds == "" {
			os.Unsetenv("LISTEN_FDS")
		}
		var out, errb bytes.Buffer
		if code := Worker(nil, &out, &errb); code != tc.code || !strings.Contains(errb.String(), tc.msg) || strings.Count(errb.String(), "\n") != 1 {
			t.Errorf("LISTEN_FDS=%q LISTEN_PID=%q: exit %d, stderr %q; want %d and %q", tc.fds, tc.pid, code, errb.String(), tc.code, tc.msg)
		}
	}
	var errb bytes.Buffer
	if code := Worker([]string{"--port", "80"}, io.Discard, &errb); code != 2 || !strings.Contains(errb.String(), `unexpected argument "--port"`) {
		t.Errorf("with arguments: exit %d, stderr %q", code, errb.String())
	}
}
