package osadapter

import (
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// workerOutput carries the workers' stdout and stderr with
// --worker-output prefix or json: each worker gets a pipe for each stream
// in place of the master's fds 1 and 2; a goroutine per pipe reads it
// (through the runtime poller: it never blocks a thread, and never the
// event loop), splits what it reads into lines, encodes them
// (lines.go) and queues them, as many whole lines as fit, on the master's
// own bounded queue for the same stream (logbuf.go): a reader that stalls
// never blocks the master, and the worker never blocks either, since its
// pipe is always drained. What does not fit is dropped and counted.
//
// Across a re-exec the read ends are handed to the next image (exec.go,
// envWorkerOutput), which re-attaches them to their workers by pid.
type workerOutput struct {
	mode           string // this image's --worker-output
	stdout, stderr *logQueue
	log            *slog.Logger
	// dropped counts the worker lines dropped since the master's first
	// start (carried across re-execs).
	dropped atomic.Int64

	mu    sync.Mutex
	pipes map[*outPipe]struct{} // open read ends
}

// outPipe is the master's read end of one worker stream.
type outPipe struct {
	f      *os.File
	fd     int
	stream string // "stdout" or "stderr"
	mode   string // prefix or json
	pid    int
	gen    int
	slot   int
	q      *logQueue
	split  *lineSplitter
	done   chan struct{} // closed when the reader goroutine returns
}

func newWorkerOutput(mode string, stdout, stderr *logQueue, log *slog.Logger) *workerOutput {
	if mode == "" {
		mode = WorkerOutputInherit
	}
	w := &workerOutput{mode: mode, stdout: stdout, stderr: stderr, log: log, pipes: make(map[*outPipe]struct{})}
	report := func(stream string) func(int64) {
		return func(n int64) {
			log.Warn(fmt.Sprintf("%d worker output lines dropped: %s was not being read", n, stream), "dropped_worker_lines", w.dropped.Load())
		}
	}
	stdout.reportWorker, stderr.reportWorker = report("stdout"), report("stderr")
	return w
}

func checkWorkerOutput(mode string) error {
	switch mode {
	case "", WorkerOutputInherit, WorkerOutputPrefix, WorkerOutputJSON:
		return nil
	}
	return errorf("unknown worker output %q: use inherit, prefix or json", mode)
}

func (w *workerOutput) piped() bool { return w != nil && w.mode != WorkerOutputInherit }

// workerPipes are the two pipes of a worker being spawned.
type workerPipes struct {
	r, w [2]int // read and write ends: [0] stdout, [1] stderr
}

// open makes a worker's pipes: both ends close-on-exec (the child gets
// the write ends as its fds 1 and 2 through ProcAttr.Files, which clears
// the flag on the dup), the read ends non-blocking, the write ends
// blocking as a worker expects of its stdout.
func (w *workerOutput) open() (*workerPipes, error) {
	p := &workerPipes{r: [2]int{-1, -1}, w: [2]int{-1, -1}}
	for i := range 2 {
		var fds [2]int
		if err := unix.Pipe2(fds[:], unix.O_CLOEXEC); err != nil {
			p.closeAll()
			return nil, errorf("make a pipe for a worker's output: %w", err)
		}
		p.r[i], p.w[i] = fds[0], fds[1]
		if err := unix.SetNonblock(fds[0], true); err != nil {
			p.closeAll()
			return nil, errorf("make a pipe for a worker's output: %w", err)
		}
	}
	return p, nil
}

func (p *workerPipes) closeWrite() {
	for i, fd := range p.w {
		if fd >= 0 {
			unix.Close(fd)
			p.w[i] = -1
		}
	}
}

func (p *workerPipes) closeAll() {
	p.closeWrite()
	for i, fd := range p.r {
		if fd >= 0 {
			unix.Close(fd)
			p.r[i] = -1
		}
	}
}

// started is told the spawn's outcome: the master's copies of the write
// ends are closed (so that the reader sees end of file when the worker
// and whatever inherited its output are gone), and the readers start; if
// the spawn failed, the read ends are closed too.
func (w *workerOutput) started(p *workerPipes, pid, gen, slot int, err error) {
	p.closeWrite()
	if err != nil {
		p.closeAll()
		return
	}
	w.attach(p.r[0], "stdout", w.mode, pid, gen, slot)
	w.attach(p.r[1], "stderr", w.mode, pid, gen, slot)
}

func (w *workerOutput) attach(fd int, stream, mode string, pid, gen, slot int) {
	q := w.stdout
	if stream == "stderr" {
		q = w.stderr
	}
	// The fd is non-blocking: NewFile puts it in the runtime poller.
	op := &outPipe{
		f: os.NewFile(uintptr(fd), "worker "+strconv.Itoa(pid)+" "+stream), fd: fd,
		stream: stream, mode: mode, pid: pid, gen: gen, slot: slot, q: q,
		split: newLineSplitter(mode, stream, gen, slot, pid),
	}
	w.mu.Lock()
	w.pipes[op] = struct{}{}
	w.mu.Unlock()
	w.start(op)
}

func (w *workerOutput) start(op *outPipe) {
	op.done = make(chan struct{})
	go w.read(op)
}

// A worker's lines wait for room in the queue while the master's stdout
// or stderr is read, however slowly: the reader stops reading the
// worker's pipe meanwhile, and the worker blocks in write(2) as it would
// on an inherited stream. Once one write(2) of the master has lasted
// workerStall, the reader counts as stalled: lines that do not fit are
// dropped (and counted) at once, and the workers run on. A wait never
// lasts more than workerWaitLimit.
const (
	workerStall     = 250 * time.Millisecond
	workerWaitLimit = time.Second
)

// readBufs are the buffers of the readers, held only while a read is
// handled: thousands of idle workers cost no buffer each.
var readBufs = sync.Pool{New: func() any { b := make([]byte, 64<<10); return &b }}
var encBufs = sync.Pool{New: func() any { return make([]byte, 0, 80<<10) }}

// read reads op until end of file (the last writer closed it: the worker
// and its children are gone), a read error, or stop's deadline.
func (w *workerOutput) read(op *outPipe) {
	defer close(op.done)
	rc, err := op.f.SyscallConn()
	if err != nil {
		w.closePipe(op)
		return
	}
	for {
		eof := false
		err := rc.Read(func(fd uintptr) bool {
			bp := readBufs.Get().(*[]byte)
			defer readBufs.Put(bp)
			var n int
			var rerr error
			for {
				n, rerr = unix.Read(int(fd), *bp)
				if rerr != unix.EINTR {
					break
				}
			}
			if rerr == unix.EAGAIN {
				return false // wait until readable
			}
			if rerr != nil || n <= 0 {
				eof = true
				return true
			}
			w.emit(op, (*bp)[:n], false)
			return true
		})
		if eof {
			w.emit(op, nil, true)
			w.closePipe(op)
			return
		}
		if err != nil {
			return // stop's deadline (the pipe stays open) or closed
		}
	}
}

// emit queues the lines p completes; at the end it also flushes the line
// under way.
func (w *workerOutput) emit(op *outPipe, p []byte, end bool) {
	var ts []byte
	if op.split.json {
		ts = stamp(time.Now())
	}
	bp := encBufs.Get().([]byte)
	dst, _ := op.split.feed(bp[:0], p, ts)
	if end {
		dst, _ = op.split.flush(dst, ts)
	}
	op.q.waitRoom(len(dst), workerStall, workerWaitLimit)
	if lost := op.q.enqueueWorker(dst); lost > 0 {
		w.dropped.Add(lost)
	}
	if cap(dst) <= 256<<10 {
		encBufs.Put(dst[:0])
	}
}

func (w *workerOutput) closePipe(op *outPipe) {
	w.mu.Lock()
	delete(w.pipes, op)
	w.mu.Unlock()
	op.f.Close()
}

// stopReaders stops every reader goroutine, for a re-exec: each returns
// at its next wait for data (a reader never waits for anything else), within
// bound; the pipes stay open. A line a worker was in the middle of (read,
// no newline yet) is queued as it is, marked truncated: the next image
// reads its rest as a line of its own. It returns the pipes still open,
// every one of which must be handed over (a pipe closed under a worker
// would kill it with SIGPIPE at its next write).
func (w *workerOutput) stopReaders(bound time.Duration) (open []*outPipe) {
	w.mu.Lock()
	pipes := make([]*outPipe, 0, len(w.pipes))
	for op := range w.pipes {
		pipes = append(pipes, op)
	}
	w.mu.Unlock()
	past := time.Unix(1, 0)
	for _, op := range pipes {
		op.f.SetReadDeadline(past)
	}
	deadline := time.Now().Add(bound)
	for _, op := range pipes {
		ok := true
		if d := time.Until(deadline); d > 0 {
			t := time.NewTimer(d)
			select {
			case <-op.done:
			case <-t.C:
				ok = false
			}
			t.Stop()
		} else {
			select {
			case <-op.done:
			default:
				ok = false
			}
		}
		w.mu.Lock()
		_, live := w.pipes[op]
		w.mu.Unlock()
		if !live {
			continue // reached end of file meanwhile
		}
		if ok && len(op.split.partial) > 0 {
			var ts []byte
			if op.split.json {
				ts = stamp(time.Now())
			}
			dst := op.split.encode(nil, cutAtRune(op.split.partial), true, ts)
			op.split.partial = nil
			if lost := op.q.enqueueWorker(dst); lost > 0 {
				w.dropped.Add(lost)
			}
		}
		open = append(open, op)
	}
	return open
}

// resumeReaders starts the readers that stopReaders stopped, when the
// re-exec did not happen.
// A reader that was slow to stop stops first: its deadline has passed,
// and it does nothing that blocks.
func (w *workerOutput) resumeReaders(pipes []*outPipe) {
	for _, op := range pipes {
		<-op.done
		w.mu.Lock()
		_, live := w.pipes[op]
		w.mu.Unlock()
		if live {
			op.f.SetReadDeadline(time.Time{})
			w.start(op)
		}
	}
}

// drain waits, within bound, until every reader has reached end of file,
// at the master's exit: its workers are gone, and what they wrote last is
// read and queued.
func (w *workerOutput) drain(bound time.Duration) {
	if w == nil {
		return
	}
	deadline := time.Now().Add(bound)
	for {
		w.mu.Lock()
		var one *outPipe
		for op := range w.pipes {
			one = op
			break
		}
		w.mu.Unlock()
		if one == nil {
			return
		}
		d := time.Until(deadline)
		if d <= 0 {
			return
		}
		t := time.NewTimer(d)
		select {
		case <-one.done:
			// Stopped by a deadline, it is no longer read; end of file
			// removed it.
			w.mu.Lock()
			delete(w.pipes, one)
			w.mu.Unlock()
		case <-t.C:
		}
		t.Stop()
	}
}

// envWorkerOutput hands the read ends to the next image:
// "<mode>;<dropped>;<pid>.<generation>.<slot>.<o|e>.<fd>,..." where mode is
// the one the pipes were made for and dropped the worker lines dropped so
// far.
const envWorkerOutput = "MWORKER_WORKER_OUTPUT"

func (w *workerOutput) handover(pipes []*outPipe, lost int64) string {
	var b strings.Builder
	b.WriteString(envWorkerOutput + "=")
	mode := w.mode
	if len(pipes) > 0 {
		mode = pipes[0].mode
	}
	b.WriteString(mode)
	b.WriteByte(';')
	b.WriteString(strconv.FormatInt(w.dropped.Load()+lost, 10))
	b.WriteByte(';')
	for i, op := range pipes {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%d.%d.%d.%c.%d", op.pid, op.gen, op.slot, op.stream[3], op.fd)
	}
	return b.String()
}

type handedPipe struct {
	pid, gen, slot, fd int
	stream             string
}

func parseWorkerOutput(v string) (mode string, dropped int64, pipes []handedPipe, err error) {
	bad := fmt.Errorf("osadapter: bad %s %q", envWorkerOutput, v)
	parts := strings.Split(v, ";")
	if len(parts) != 3 || checkWorkerOutput(parts[0]) != nil || parts[0] == WorkerOutputInherit {
		return "", 0, nil, bad
	}
	mode = parts[0]
	if dropped, err = strconv.ParseInt(parts[1], 10, 64); err != nil || dropped < 0 {
		return "", 0, nil, bad
	}
	if parts[2] == "" {
		return mode, dropped, nil, nil
	}
	for _, e := range strings.Split(parts[2], ",") {
		f := strings.Split(e, ".")
		if len(f) != 5 || (f[3] != "o" && f[3] != "e") {
			return "", 0, nil, bad
		}
		var n [4]int
		for i, s := range []string{f[0], f[1], f[2], f[4]} {
			if n[i], err = strconv.Atoi(s); err != nil || n[i] < 0 {
				return "", 0, nil, bad
			}
		}
		stream := "stdout"
		if f[3] == "e" {
			stream = "stderr"
		}
		pipes = append(pipes, handedPipe{pid: n[0], gen: n[1], slot: n[2], fd: n[3], stream: stream})
	}
	return mode, dropped, pipes, nil
}

// adopt takes over the read ends the previous image handed over. Each fd
// must still be a pipe: one that is not is left alone (and logged). The
// lines keep the mode they were made for when this image's is inherit.
func (w *workerOutput) adopt(v string) error {
	mode, dropped, pipes, err := parseWorkerOutput(v)
	if err != nil {
		return err
	}
	w.dropped.Add(dropped)
	if w.mode != WorkerOutputInherit {
		mode = w.mode
	}
	for _, p := range pipes {
		var st unix.Stat_t
		if err := unix.Fstat(p.fd, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFIFO {
			w.log.Warn("a worker output pipe handed over is no longer a pipe: that worker's output is no longer read", "fd", p.fd, "pid", p.pid)
			continue
		}
		// Workers started from now on must not inherit it.
		unix.CloseOnExec(p.fd)
		if err := unix.SetNonblock(p.fd, true); err != nil {
			w.log.Warn("cannot read a worker output pipe handed over", "fd", p.fd, "pid", p.pid, "err", err.Error())
			continue
		}
		w.attach(p.fd, p.stream, mode, p.pid, p.gen, p.slot)
	}
	return nil
}
