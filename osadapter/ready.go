package osadapter

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/mworker/mworker/internal/sdnotify"
)

// envReadySockets carries the notify sockets of live workers across a
// re-exec: "PID:FD" entries joined by commas. Internal: no worker sees it.
const envReadySockets = "MWORKER_READY_SOCKETS"

// readySockets are the workers' notify sockets (--ready notify): one per
// worker, made by the master before the fork, so that the socket a
// datagram arrives on names the worker, whichever process of its tree
// sent it (see sdnotify.Socket). Each socket has one goroutine blocked in
// Receive; a READY=1 reaches the loop on out, where it becomes
// fsm.WorkerReady. The sockets are abstract ("@..."): no file to create
// or to clean up after a re-exec or a crash, and the kernel frees the
// name with the last descriptor.
type readySockets struct {
	// enabled is --ready notify: only then do new workers get a socket.
	// Sockets handed over by a previous image are taken over regardless,
	// so that none leaks.
	enabled bool
	log     *slog.Logger
	prefix  string // "@mworker-notify/<master pid>/<random>/": unique to this image
	seq     int
	byPid   map[int]*readySocket
	out     chan readySignal
}

// readySocket is one worker's socket.
type readySocket struct {
	s    *sdnotify.Socket
	pid  int
	done chan struct{} // closed when the worker is reaped
}

// readySignal is a READY=1 received on sock.
type readySignal struct{ sock *readySocket }

func newReadySockets(enabled bool, log *slog.Logger, masterPid int) (*readySockets, error) {
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, errorf("name notify sockets: %w", err)
	}
	return &readySockets{
		enabled: enabled,
		log:     log,
		prefix:  "@mworker-notify/" + strconv.Itoa(masterPid) + "/" + hex.EncodeToString(b[:]) + "/",
		byPid:   make(map[int]*readySocket),
		out:     make(chan readySignal, 64),
	}, nil
}

// open makes the socket of the worker about to be spawned in slot of gen;
// its address is the worker's NOTIFY_SOCKET. Watch it once the worker has
// a pid, or close it if the spawn fails.
func (r *readySockets) open(gen, slot int) (*readySocket, error) {
	r.seq++
	s, err := sdnotify.Listen(r.prefix + strconv.Itoa(gen) + "." + strconv.Itoa(slot) + "." + strconv.Itoa(r.seq))
	if err != nil {
		return nil, errorf("notify socket of generation %d slot %d: %w", gen, slot, err)
	}
	return &readySocket{s: s, done: make(chan struct{})}, nil
}

// watch ties rs to the worker pid and receives on it until the worker is
// reaped.
func (r *readySockets) watch(rs *readySocket, pid int) {
	rs.pid = pid
	r.byPid[pid] = rs
	go rs.receive(r.out, r.log)
}

// receive runs on its own goroutine: it blocks in the kernel, so an idle
// master costs no CPU.
func (rs *readySocket) receive(out chan<- readySignal, log *slog.Logger) {
	for {
		d, err := rs.s.Receive()
		if errors.Is(err, sdnotify.ErrRejected) {
			log.Log(context.Background(), slog.LevelDebug, "notify datagram ignored",
				"worker", rs.pid, "sender_pid", d.PID, "sender_uid", d.UID, "err", err.Error())
			continue
		}
		if err != nil {
			return // closed: the worker was reaped, or the master exits
		}
		log.Log(context.Background(), slog.LevelDebug, "notify datagram", "worker", rs.pid, "sender_pid", d.PID, "message", d.Message.Format())
		if !d.Message.Ready {
			continue
		}
		select {
		case out <- readySignal{rs}:
		case <-rs.done:
			return
		}
	}
}

// current says whether sig comes from the socket of a worker still alive,
// not from a reaped one whose pid was reused.
func (r *readySockets) current(sig readySignal) bool {
	return r.byPid[sig.sock.pid] == sig.sock
}

// drop closes the socket of a reaped worker.
func (r *readySockets) drop(pid int) {
	if rs, ok := r.byPid[pid]; ok {
		delete(r.byPid, pid)
		rs.close(r.log)
	}
}

func (rs *readySocket) close(log *slog.Logger) {
	close(rs.done)
	if err := rs.s.Close(); err != nil {
		log.Log(context.Background(), slog.LevelDebug, "close notify socket", "worker", rs.pid, "err", err.Error())
	}
}

// closeAll closes every socket, at the master's exit.
func (r *readySockets) closeAll() {
	for pid := range r.byPid {
		r.drop(pid)
	}
}

// prepareExec hands the sockets of the live workers to the next image: an
// adopted worker may still send (STATUS=, STOPPING=1, a late READY=1),
// and a datagram queued meanwhile stays in the socket. A socket is a
// duplicate descriptor with close-on-exec cleared; the originals close
// with this image. undo closes the duplicates after a failed execve.
func (r *readySockets) prepareExec() (env string, undo func(), err error) {
	var files []*os.File
	undo = func() {
		for _, f := range files {
			f.Close()
		}
	}
	pids := make([]int, 0, len(r.byPid))
	for pid := range r.byPid {
		pids = append(pids, pid)
	}
	slices.Sort(pids)
	entries := make([]string, 0, len(pids))
	for _, pid := range pids {
		f, err := r.byPid[pid].s.File()
		if err != nil {
			undo()
			return "", nil, errorf("keep the notify socket of worker %d: %w", pid, err)
		}
		files = append(files, f)
		// Not f.Fd(): it would make the socket, shared with the one being
		// received on, blocking.
		fd, err := rawFd(f)
		if err == nil {
			err = setCloexec(fd, false)
		}
		if err != nil {
			undo()
			return "", nil, errorf("keep the notify socket of worker %d: %w", pid, err)
		}
		entries = append(entries, strconv.Itoa(pid)+":"+strconv.Itoa(fd))
	}
	return envReadySockets + "=" + strings.Join(entries, ","), undo, nil
}

// adopt takes over the sockets a previous image handed over in v (the
// value of envReadySockets). A bad entry is logged and skipped: the worker
// then only loses its socket.
func (r *readySockets) adopt(v string) {
	if v == "" {
		return
	}
	for _, e := range strings.Split(v, ",") {
		pidText, fdText, _ := strings.Cut(e, ":")
		pid, err1 := strconv.Atoi(pidText)
		fd, err2 := strconv.Atoi(fdText)
		if err1 != nil || err2 != nil || pid <= 0 || fd < 3 {
			r.log.Warn("bad notify socket entry from the previous image", "entry", e)
			continue
		}
		f := os.NewFile(uintptr(fd), "notify socket")
		s, err := sdnotify.FromFile(f)
		f.Close()
		if err != nil {
			r.log.Warn("cannot take over a notify socket", "worker", pid, "err", err.Error())
			continue
		}
		r.watch(&readySocket{s: s, done: make(chan struct{})}, pid)
	}
}

// rawFd is f's descriptor number, read without os.File.Fd, which would put
// the descriptor in blocking mode.
func rawFd(f *os.File) (int, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	if err := rc.Control(func(u uintptr) { fd = int(u) }); err != nil {
		return -1, err
	}
	return fd, nil
}

func setCloexec(fd int, on bool) error {
	flag := 0
	if on {
		flag = unix.FD_CLOEXEC
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, flag); err != nil {
		return fmt.Errorf("fd %d: set close-on-exec %v: %w", fd, on, err)
	}
	return nil
}
