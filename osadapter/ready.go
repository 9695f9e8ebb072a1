package osadapter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/mworker/mworker/fsm"
	"github.com/mworker/mworker/internal/sdnotify"
)

// envReadySockets carries the notify sockets of live workers across a
// re-exec: "PID:FD" entries joined by commas. envReadyDir carries the
// directory they are in, which the next image adopts. Internal: no worker
// sees them.
const (
	envReadySockets = "MWORKER_READY_SOCKETS"
	envReadyDir     = "MWORKER_READY_DIR"
)

// readySockets are the workers' notify sockets (--ready notify, --watchdog):
// one per worker, made by the master before the fork, so that the socket a
// datagram arrives on names the worker, whichever process of its tree
// sent it (see sdnotify.Socket). Each socket has one goroutine blocked in
// Receive; a READY=1 or a WATCHDOG= reaches the loop on out, where it
// becomes fsm.WorkerReady (under --ready notify only) or fsm.WorkerWatchdog
// (under --watchdog only).
//
// The sockets are files "<gen>.<slot>.<seq>" in a directory of mode 0700
// that the master makes once (sdnotify.MakeDir), that every later image
// adopts, and that the last one removes at exit. They were abstract
// names once, which needed no file; but anyone can read those in
// /proc/net/unix and bind the next one first, and a spawn then failed
// with EADDRINUSE for as long as another uid cared to squat, while
// clients that take NOTIFY_SOCKET only as a path (Ruby's sd_notify, so
// puma) could not use them at all. No other uid can enter the directory,
// so the names are of no use to it.
type readySockets struct {
	// enabled is --ready notify or --watchdog: only then do new workers
	// get a socket. Sockets handed over by a previous image are taken over
	// regardless, so that none leaks.
	enabled bool
	// notify is --ready notify: a READY=1 makes the worker ready. Under
	// another --ready it is ignored, so that a worker that sends it (as
	// many do when they find NOTIFY_SOCKET) is still judged as --ready says.
	notify bool
	// watchdog is --watchdog: WATCHDOG=1 and WATCHDOG=trigger are fed.
	watchdog bool
	log      *slog.Logger
	// dir holds the sockets; "" when neither --ready notify nor --watchdog
	// was ever on.
	dir   string
	seq   int // of the last name tried; names stay unique across images
	byPid map[int]*readySocket
	out   chan readySignal
	// texts is each live worker's last STATUS=, by pid, for status; the
	// loop's (statusState.StatusText), written on the loop's goroutine.
	texts map[int]string
	// cred is the workers' uid and gid under --user, or nil (share).
	cred *syscall.Credential
}

// share lets workers that run as cred (--user, --group) use their
// sockets: the directory becomes root's with cred's group, mode 0710
// (that group may reach a name it knows, not list nor create one), each
// socket belongs to cred's uid, mode 0600, and that uid's datagrams are
// accepted besides the master's own.
func (r *readySockets) share(cred *syscall.Credential) error {
	r.cred = cred
	if r.dir == "" {
		return nil
	}
	if err := os.Chown(r.dir, os.Getuid(), int(cred.Gid)); err != nil {
		return errorf("--user: notify socket directory: %w", err)
	}
	if err := os.Chmod(r.dir, 0o710); err != nil {
		return errorf("--user: notify socket directory: %w", err)
	}
	return nil
}

// readySocket is one worker's socket.
type readySocket struct {
	s    *sdnotify.Socket
	pid  int
	done chan struct{} // closed when the worker is reaped
}

// readySignal is a datagram received on sock that says READY=1, or
// WATCHDOG=1 or WATCHDOG=trigger, or both.
type readySignal struct {
	sock      *readySocket
	ready     bool   // READY=1
	watchdog  string // the value of WATCHDOG= ("1" or "trigger"), or ""
	status    string // the value of STATUS=, when hasStatus
	hasStatus bool
}

// newReadySockets adopts the directory of the previous image, if env
// names one that is still the master's own, and otherwise makes one when
// enabled, in the first usable of readyDirParents(env).
func newReadySockets(enabled bool, log *slog.Logger, env []string) (*readySockets, error) {
	r := &readySockets{
		enabled: enabled,
		log:     log,
		byPid:   make(map[int]*readySocket),
		out:     make(chan readySignal, 64),
	}
	if dir, _ := lookupEnv(env, envReadyDir); dir != "" {
		if err := checkReadyDir(dir); err != nil {
			log.Warn("notify socket directory of the previous image not taken over: making a new one", "path", dir, "err", err.Error())
		} else {
			r.dir = dir
		}
	}
	if r.dir == "" && enabled {
		dir, err := makeReadyDir(readyDirParents(env), log)
		if err != nil {
			return nil, err
		}
		r.dir = dir
	}
	return r, nil
}

// readyNameRoom is the room a socket's "/<gen>.<slot>.<seq>" needs after
// the directory in sun_path (1+7+1+5+1+10 leaves a million reloads of
// 10,000 workers), and the directory takes "/mworker-" and up to 10
// digits (os.MkdirTemp) after its parent.
const (
	readyNameRoom  = 32
	readyDirSuffix = len("/mworker-") + 10
)

// readyDirParents are the places to make the directory in, best first:
// systemd's RuntimeDirectory= (the first if it lists several), the user's
// runtime directory, TMPDIR, then /tmp.
func readyDirParents(env []string) []string {
	var out []string
	if v, _ := lookupEnv(env, "RUNTIME_DIRECTORY"); v != "" {
		out = append(out, strings.Split(v, ":")[0])
	}
	for _, name := range []string{"XDG_RUNTIME_DIR", "TMPDIR"} {
		if v, _ := lookupEnv(env, name); v != "" {
			out = append(out, v)
		}
	}
	return append(out, "/tmp")
}

// makeReadyDir makes the directory in the first of parents that is short
// enough for sun_path, safe and writable; the error names each refusal.
func makeReadyDir(parents []string, log *slog.Logger) (string, error) {
	var why []string
	for _, p := range parents {
		p = filepath.Clean(p)
		err := checkReadyParent(p)
		var dir string
		if err == nil {
			dir, err = sdnotify.MakeDir(p)
		}
		if err != nil {
			log.Debug("no notify socket directory here", "parent", p, "err", err.Error())
			why = append(why, err.Error())
			continue
		}
		log.Debug("notify socket directory", "path", dir)
		return dir, nil
	}
	return "", errorf("--ready notify, --watchdog: no directory for the workers' notify sockets (%s): set TMPDIR to a short directory this user may write", strings.Join(why, "; "))
}

// checkReadyParent refuses a parent that would make socket paths too long
// for sun_path, or in which another user could rename the directory and
// put another in its place: one owned by another user (XDG_RUNTIME_DIR
// left over from sudo, say), or writable by others without the sticky
// bit.
func checkReadyParent(p string) error {
	if !filepath.IsAbs(p) {
		return fmt.Errorf("%s is not an absolute path", p)
	}
	if n := len(p) + readyDirSuffix + readyNameRoom; n > sdnotify.MaxAddr {
		return fmt.Errorf("%s is too long: socket paths would take %d bytes, the kernel allows %d", p, n, sdnotify.MaxAddr)
	}
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		return &os.PathError{Op: "stat", Path: p, Err: err}
	}
	switch uid := uint32(os.Getuid()); {
	case st.Mode&unix.S_IFMT != unix.S_IFDIR:
		return fmt.Errorf("%s is not a directory", p)
	case st.Uid != uid && st.Uid != 0:
		return fmt.Errorf("%s belongs to uid %d", p, st.Uid)
	case st.Mode&0o022 != 0 && st.Mode&unix.S_ISVTX == 0:
		return fmt.Errorf("%s is writable by others and not sticky", p)
	}
	return nil
}

// checkReadyDir says whether dir, handed over by the previous image, is
// still a directory of the master's uid that no one else may enter.
func checkReadyDir(dir string) error {
	var st unix.Stat_t
	if err := unix.Lstat(dir, &st); err != nil {
		return &os.PathError{Op: "lstat", Path: dir, Err: err}
	}
	// 0710 under --user (share): the workers' group may search it.
	if st.Mode&unix.S_IFMT != unix.S_IFDIR || st.Uid != uint32(os.Getuid()) || st.Mode&0o067 != 0 {
		return fmt.Errorf("%s: not a private directory of uid %d (mode %#o, uid %d)", dir, os.Getuid(), st.Mode, st.Uid)
	}
	return nil
}

// readyRetries bounds the names open tries when each is taken.
const readyRetries = 8

// open makes the socket of the worker about to be spawned in slot of gen;
// its address is the worker's NOTIFY_SOCKET. Watch it once the worker has
// a pid, or close it if the spawn fails. A name already taken (a file
// left in the directory) does not fail the spawn: the next one is tried
// at once.
func (r *readySockets) open(gen, slot int) (*readySocket, error) {
	if r.dir == "" {
		return nil, errorf("notify socket of generation %d slot %d: no notify socket directory", gen, slot)
	}
	for try := 1; ; try++ {
		r.seq++
		s, err := sdnotify.Listen(filepath.Join(r.dir, strconv.Itoa(gen)+"."+strconv.Itoa(slot)+"."+strconv.Itoa(r.seq)))
		if err == nil && r.cred != nil {
			if err = os.Chown(s.Addr(), int(r.cred.Uid), int(r.cred.Gid)); err == nil {
				err = os.Chmod(s.Addr(), 0o600)
			}
			if err != nil {
				s.Close()
				os.Remove(s.Addr())
				return nil, errorf("notify socket of generation %d slot %d for --user: %w", gen, slot, err)
			}
		}
		if err == nil {
			return &readySocket{s: s, done: make(chan struct{})}, nil
		}
		if !errors.Is(err, unix.EADDRINUSE) || try == readyRetries {
			return nil, errorf("notify socket of generation %d slot %d: %w", gen, slot, err)
		}
		r.log.Debug("notify socket name taken: trying the next", "err", err.Error())
	}
}

// watch ties rs to the worker pid and receives on it until the worker is
// reaped.
func (r *readySockets) watch(rs *readySocket, pid int) {
	rs.pid = pid
	if r.cred != nil {
		rs.s.Accept(int(r.cred.Uid))
	}
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
		wd, _ := d.Message.Value("WATCHDOG") // "1" or "trigger": Parse checked it
		text, hasText := d.Message.Status()
		if !d.Message.Ready && wd == "" && !hasText {
			continue
		}
		select {
		case out <- readySignal{sock: rs, ready: d.Message.Ready, watchdog: wd, status: text, hasStatus: hasText}:
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

// events are what sig tells the machine: WorkerReady under --ready notify,
// WorkerWatchdog under --watchdog, none from a reaped worker's socket.
func (r *readySockets) events(sig readySignal) []fsm.Event {
	if !r.current(sig) {
		return nil
	}
	if sig.hasStatus && r.texts != nil {
		r.texts[sig.sock.pid] = sig.status
	}
	var evs []fsm.Event
	if sig.ready && r.notify {
		evs = append(evs, fsm.WorkerReady{Pid: sig.sock.pid})
	}
	if sig.watchdog != "" && r.watchdog {
		evs = append(evs, fsm.WorkerWatchdog{Pid: sig.sock.pid, Trigger: sig.watchdog == "trigger"})
	}
	return evs
}

// drop closes the socket of a reaped worker.
func (r *readySockets) drop(pid int) {
	delete(r.texts, pid)
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

// closeAll closes every socket and removes its file.
func (r *readySockets) closeAll() {
	for pid := range r.byPid {
		r.drop(pid)
	}
}

// exit closes every socket and removes the directory, at the master's
// exit (never across a re-exec, which hands both to the next image). A
// master killed by SIGKILL leaves the directory behind, with the files of
// the sockets its workers had: see docs/guide.md.
func (r *readySockets) exit() {
	r.closeAll()
	if r.dir == "" {
		return
	}
	if err := os.RemoveAll(r.dir); err != nil {
		r.log.Warn("cannot remove the notify socket directory", "path", r.dir, "err", err.Error())
	}
	r.dir = ""
}

// prepareExec hands the directory and the sockets of the live workers to
// the next image: an adopted worker may still send (STATUS=, STOPPING=1,
// a late READY=1), and a datagram queued meanwhile stays in the socket. A
// socket is a duplicate descriptor with close-on-exec cleared; the
// originals close with this image, and their files stay. undo closes the
// duplicates after a failed execve.
func (r *readySockets) prepareExec() (env []string, undo func(), err error) {
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
			return nil, nil, errorf("keep the notify socket of worker %d: %w", pid, err)
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
			return nil, nil, errorf("keep the notify socket of worker %d: %w", pid, err)
		}
		entries = append(entries, strconv.Itoa(pid)+":"+strconv.Itoa(fd))
	}
	// Always set, if empty, so that a value this image was started with
	// does not reach the next one.
	return []string{envReadySockets + "=" + strings.Join(entries, ","), envReadyDir + "=" + r.dir}, undo, nil
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
		// The names of this image follow those of the previous one.
		if _, seq, ok := strings.Cut(filepath.Base(s.Addr()), "."); ok {
			if _, seq, ok = strings.Cut(seq, "."); ok {
				if n, err := strconv.Atoi(seq); err == nil && n > r.seq {
					r.seq = n
				}
			}
		}
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
