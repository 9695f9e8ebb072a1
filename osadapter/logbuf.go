package osadapter

import (
	"bytes"
	"fmt"
	"io"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"
)

// heldWriter stands between the logger and stderr. While the loop performs
// the actions of one event it holds every line back and queues them all at
// once when the event is done, so that a stop or a reload signals the
// workers before anything is printed, and an exit costs one write instead
// of one per line. Lines come out in the order they were logged; lines
// logged from other goroutines wait for the event too.
//
// The loop flushes before an execve (the next image would not have them)
// and before it answers a control request (its client may read the log
// next), and waits a bounded time for the queue to write them (sync); the
// hold never outlives an event, so nothing is kept for long.
type heldWriter struct {
	mu   sync.Mutex
	q    *logQueue
	held int // nesting depth: an action's outcome is a nested event
	buf  bytes.Buffer
}

func newHeldWriter(w io.Writer) *heldWriter {
	return &heldWriter{q: newLogQueue(w, logQueueSize)}
}

func (h *heldWriter) Write(p []byte) (int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.held > 0 {
		return h.buf.Write(p)
	}
	h.q.enqueue(p)
	return len(p), nil
}

// hold starts holding lines back, or one level deeper.
func (h *heldWriter) hold() {
	h.mu.Lock()
	h.held++
	h.mu.Unlock()
}

// release ends one level of hold; at the outermost it queues what was held.
func (h *heldWriter) release() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.held > 0 {
		h.held--
	}
	if h.held == 0 {
		h.flushLocked()
	}
}

// flush queues what is held now, and keeps holding.
func (h *heldWriter) flush() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.flushLocked()
}

// sync queues what is held now and waits, within w's bounds, until
// everything queued so far is written. It reports whether it was.
func (h *heldWriter) sync(w logWait) bool {
	h.mu.Lock()
	h.flushLocked()
	target := h.q.queuedBytes()
	h.mu.Unlock()
	return h.q.wait(target, w)
}

func (h *heldWriter) flushLocked() {
	if h.buf.Len() == 0 {
		return
	}
	h.q.enqueue(h.buf.Bytes())
	h.buf.Reset()
	if h.buf.Cap() > 64<<10 {
		h.buf = bytes.Buffer{} // a burst (a reload of 1,024 workers) is not kept
	}
}

// logQueueSize bounds the bytes queued for stderr and not yet written.
// A healthy reader takes a line in microseconds, so the queue only holds
// what a few events log at once. The largest event, the start of 1,024
// workers, logs about 100 KiB at debug level (measured with the fake OS);
// 1 MiB holds ten of those, or about 7,000 lines of 150 bytes, which is
// seconds of a busy master's log. Beyond that the reader is not keeping
// up, and what would not fit is dropped (and counted) rather than stalling
// the loop. The memory is used only while the reader is behind.
const logQueueSize = 1 << 20

// logWait bounds how long the loop waits for the queue to be written:
// until the writer has spent stall in one write(2) that has not returned
// (stderr is not being read), and never longer than limit. The limit only
// matters when the writer is not in write(2) at all: its goroutine has not
// been scheduled yet on a loaded machine, which is no reason to give up
// the order of log and answer.
type logWait struct {
	stall, limit time.Duration
}

var (
	// A reply's client may read the log next; a stalled reader must not
	// delay the answer by more than a few ms.
	replyWait = logWait{stall: 5 * time.Millisecond, limit: time.Second}
	// The next image will not have what is queued: a little longer.
	execWait = logWait{stall: 50 * time.Millisecond, limit: time.Second}
	// The last lines say why the master exits.
	exitWait = logWait{stall: 500 * time.Millisecond, limit: 2 * time.Second}
)

// logQueue writes to stderr from a goroutine of its own, so that the loop
// never blocks in write(2) on a pipe nobody reads (a hung journald or log
// driver, a terminal on hold). stderr itself stays blocking: its open file
// description is shared with the workers, who expect that.
//
// At most max bytes wait; lines beyond that are dropped whole and counted,
// and once the writer has caught up (everything queued is written) the
// count is reported through report, a log line that goes through the queue
// too. One writer goroutine runs while there is something to write, and
// none when the queue is empty.
type logQueue struct {
	w      io.Writer
	max    int
	report func(lines, total int64) // set once, before the first line
	// reportWorker reports the lines of workers dropped since the last
	// report (workerout.go); set once, before the first worker starts.
	reportWorker func(lines int64)

	mu         sync.Mutex
	pending    []byte // queued, not yet taken by the writer
	spare      []byte // the writer's last buffer, for reuse
	inFlight   int    // bytes of the write(2) under way
	inLines    int64  // their lines
	writeStart time.Time
	writing    bool   // a writer goroutine runs
	queued     uint64 // bytes queued since the start
	written    uint64 // bytes written (or lost to a failed write) since the start
	progress   chan struct{}
	unreported int64 // lines dropped since the last report
	dropped    int64 // lines dropped since the master's first start
	// workerUnreported counts the worker lines dropped since the last
	// report; workerOutput keeps their total.
	workerUnreported int64
}

func newLogQueue(w io.Writer, max int) *logQueue {
	return &logQueue{w: w, max: max, progress: make(chan struct{})}
}

// enqueue copies p into the queue, or as many whole lines of it as fit.
func (q *logQueue) enqueue(p []byte) {
	q.add(p, false)
}

// enqueueWorker is enqueue for the lines of workers (workerout.go): those
// that do not fit are counted apart from the master's own, and returned.
func (q *logQueue) enqueueWorker(p []byte) (lost int64) {
	return q.add(p, true)
}

func (q *logQueue) add(p []byte, worker bool) (lost int64) {
	if len(p) == 0 {
		return 0
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	room := q.max - len(q.pending) - q.inFlight
	if len(p) > room {
		keep := 0
		if room > 0 {
			keep = bytes.LastIndexByte(p[:room], '\n') + 1
		}
		lost = int64(bytes.Count(p[keep:], []byte{'\n'}))
		if p[len(p)-1] != '\n' {
			lost++
		}
		if worker {
			q.workerUnreported += lost
		} else {
			q.unreported += lost
			q.dropped += lost
		}
		p = p[:keep]
	}
	if len(p) == 0 {
		return lost
	}
	q.pending = append(q.pending, p...)
	q.queued += uint64(len(p))
	if !q.writing {
		q.writing = true
		go q.run()
	}
	return lost
}

// run writes what is queued until nothing is, then reports the lines
// dropped meanwhile, if any.
func (q *logQueue) run() {
	// Written from the background to a terminal with TOSTOP set (stty
	// tostop), the kernel would send SIGTTOU to the master's group and
	// restart the write after the handler, for ever, each SIGTTOU being
	// forwarded to the workers; blocked in the writing thread, it lets
	// the write through (terminal.go).
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	defer blockTTOU()()
	ok := true
	for {
		q.mu.Lock()
		if len(q.pending) == 0 {
			q.writing = false
			n, total := q.unreported, q.dropped
			report := ok && n > 0 && q.report != nil
			if report {
				q.unreported = 0
			}
			wn := q.workerUnreported
			reportWorker := ok && wn > 0 && q.reportWorker != nil
			if reportWorker {
				q.workerUnreported = 0
			}
			q.mu.Unlock()
			if report {
				q.report(n, total)
			}
			if reportWorker {
				q.reportWorker(wn)
			}
			return
		}
		buf := q.pending
		q.pending, q.spare = q.spare[:0], nil
		q.inFlight, q.inLines = len(buf), int64(bytes.Count(buf, []byte{'\n'}))
		q.writeStart = time.Now()
		q.signalLocked()
		q.mu.Unlock()

		// A failed write (stderr closed) loses the lines, as it would have
		// lost each of them unbuffered; they are not counted as dropped
		// (the reader did not fall behind, it is gone), and nothing is
		// reported on it.
		err := q.writeChunks(buf)
		ok = err == nil

		q.mu.Lock()
		q.written += uint64(len(buf))
		q.inFlight, q.inLines = 0, 0
		if cap(buf) <= 64<<10 {
			q.spare = buf[:0] // a burst is not kept
		}
		q.signalLocked()
		q.mu.Unlock()
	}
}

// writeChunks writes buf in pieces of at most writeChunk bytes, each
// ending at a line's end where one does, and restarts writeStart at each:
// a waiter tells a reader that is slow (pieces go through, one by one)
// from one that is stalled (one piece does not). Other writers of the same
// stream (workers, with --worker-output inherit) may write between two
// pieces, never inside a line.
func (q *logQueue) writeChunks(buf []byte) error {
	for len(buf) > 0 {
		n := len(buf)
		if n > writeChunk {
			n = writeChunk
			if i := bytes.LastIndexByte(buf[:n], '\n'); i >= 0 {
				n = i + 1
			}
		}
		if _, err := q.w.Write(buf[:n]); err != nil {
			return err
		}
		buf = buf[n:]
		if len(buf) > 0 {
			q.mu.Lock()
			q.writeStart = time.Now()
			q.signalLocked()
			q.mu.Unlock()
		}
	}
	return nil
}

// writeChunk is a pipe's default capacity: a reader that reads at all
// takes one in well under workerStall.
const writeChunk = 64 << 10

// signalLocked wakes the waiters: a write started or ended.
func (q *logQueue) signalLocked() {
	close(q.progress)
	q.progress = make(chan struct{})
}

func (q *logQueue) queuedBytes() uint64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.queued
}

// wait waits until the first target bytes queued are written, or w's
// bounds pass first, and says which.
func (q *logQueue) wait(target uint64, w logWait) bool {
	end := time.Now().Add(w.limit)
	for {
		q.mu.Lock()
		if q.written >= target {
			q.mu.Unlock()
			return true
		}
		deadline := end
		if q.inFlight > 0 {
			if s := q.writeStart.Add(w.stall); s.Before(deadline) {
				deadline = s
			}
		}
		ch := q.progress
		q.mu.Unlock()
		d := time.Until(deadline)
		if d <= 0 {
			return false
		}
		timer := time.NewTimer(d)
		select {
		case <-ch:
			timer.Stop()
		case <-timer.C:
			return false
		}
	}
}

// droppedLines is how many lines were dropped since the master's first
// start.
func (q *logQueue) droppedLines() int64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.dropped
}

// handover is what the next image carries: the lines dropped so far, and
// those not reported yet, counting as dropped what is still queued or
// being written (an execve ends the writer).
func (q *logQueue) handover() (total, unreported int64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	lost := q.inLines + int64(bytes.Count(q.pending, []byte{'\n'}))
	return q.dropped + lost, q.unreported + lost
}

// resume takes over the counts the previous image handed over.
func (q *logQueue) resume(total, unreported int64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.dropped += total
	q.unreported += unreported
}

// envLogDropped carries the dropped log lines across a re-exec:
// "<total>,<not reported yet>". It is computed just before execve, after
// the last wait for the writer, so it counts every line this image lost.
const envLogDropped = "MWORKER_LOG_DROPPED"

func logDropped(total, unreported int64) string {
	return envLogDropped + "=" + strconv.FormatInt(total, 10) + "," + strconv.FormatInt(unreported, 10)
}

func parseLogDropped(v string) (total, unreported int64, err error) {
	a, b, ok := strings.Cut(v, ",")
	if ok {
		total, err = strconv.ParseInt(a, 10, 64)
	}
	if ok && err == nil {
		unreported, err = strconv.ParseInt(b, 10, 64)
	}
	if !ok || err != nil || total < 0 || unreported < 0 || unreported > total {
		return 0, 0, fmt.Errorf("osadapter: bad %s %q", envLogDropped, v)
	}
	return total, unreported, nil
}

// waitRoom waits until n bytes fit in the queue, while the writer is
// making progress: it returns at once when they fit, when n is more than
// the queue holds, when the write(2) under way has lasted stall (the
// reader is not reading: what does not fit is then dropped, not waited
// for), or after limit. Only a worker output reader calls it
// (workerout.go), never the loop: it slows a worker to the pace of a slow
// but live reader, as its own write(2) to an inherited stderr would.
func (q *logQueue) waitRoom(n int, stall, limit time.Duration) {
	end := time.Now().Add(limit)
	for {
		q.mu.Lock()
		if n > q.max || q.max-len(q.pending)-q.inFlight >= n {
			q.mu.Unlock()
			return
		}
		deadline := end
		if q.inFlight > 0 {
			if s := q.writeStart.Add(stall); s.Before(deadline) {
				deadline = s
			}
		}
		ch := q.progress
		q.mu.Unlock()
		d := time.Until(deadline)
		if d <= 0 {
			return
		}
		timer := time.NewTimer(d)
		select {
		case <-ch:
			timer.Stop()
		case <-timer.C:
			return
		}
	}
}
