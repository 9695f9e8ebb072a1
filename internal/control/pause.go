package control

import (
	"errors"
	"os"
	"time"
)

// Pause stops Serve accepting, for a re-exec: clients that connect from
// now on wait in the socket's listen queue, which the next image inherits
// and serves. It interrupts the reading of every accepted client's request:
// a request read in full is held (take it with Held), and a client that
// has not sent its whole line yet is kept with what it sent, for
// PrepareExec to hand over (the next image reads the rest) or for Resume to
// read on. Nothing waits for a client, so a client that is slow to send
// its line, or a storm of them, cannot hold the re-exec nor lose its
// answer. Pause then waits, at most wait, until the goroutine of every
// accepted client has held or kept it (or begun answering a bad request,
// which it does alone), and reports whether all did. That takes no more
// than their scheduling, but on a loaded machine that can be a while, and
// a client they had not held or kept by then would die with the exec.
//
// Resume undoes it (the execve failed). Both are for the event loop's
// goroutine; Serve must be running.
func (l *Listener) Pause(wait time.Duration) bool {
	l.pmu.Lock()
	if l.paused {
		l.pmu.Unlock()
		return true
	}
	l.paused = true
	close(l.hold)
	l.parked = make(chan struct{})
	l.resumed = make(chan struct{})
	parked := l.parked
	now := time.Now()
	for c := range l.reading {
		l.reading[c] = true
		c.c.SetReadDeadline(now)
	}
	l.pmu.Unlock()
	// Interrupt an accept in progress.
	l.ln.SetDeadline(now)

	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	select {
	case <-parked:
	case <-l.done:
		return true
	case <-deadline.C:
		return false
	}
	l.pmu.Lock()
	if l.inflight == 0 {
		l.pmu.Unlock()
		return true
	}
	l.drained = make(chan struct{})
	drained := l.drained
	l.pmu.Unlock()
	select {
	case <-drained:
		return true
	case <-deadline.C:
		return false
	}
}

// Held returns, once, the requests read in full while paused, which Serve
// did not send on: the event loop hands them over (PrepareExec's queued)
// with what it drains from the channel, or, if the execve fails, feeds
// them.
func (l *Listener) Held() []Request {
	l.pmu.Lock()
	defer l.pmu.Unlock()
	h := l.held
	l.held = nil
	return h
}

// handled ends a client's handling (sent on, held, kept or answered).
func (l *Listener) handled() {
	l.pmu.Lock()
	defer l.pmu.Unlock()
	l.inflight--
	if l.inflight == 0 && l.drained != nil {
		close(l.drained)
		l.drained = nil
	}
}

// startReading sets the deadline of conn's request, unless paused: then
// it says so, and the client is kept unread.
func (l *Listener) startReading(conn *Conn) bool {
	l.pmu.Lock()
	defer l.pmu.Unlock()
	if l.paused {
		return false
	}
	l.reading[conn] = false
	conn.c.SetReadDeadline(time.Now().Add(requestTimeout))
	return true
}

// stopReading ends the reading of conn's request, and says whether it
// failed because Pause interrupted it.
func (l *Listener) stopReading(conn *Conn, err error) bool {
	l.pmu.Lock()
	defer l.pmu.Unlock()
	interrupted := l.reading[conn]
	delete(l.reading, conn)
	return interrupted && errors.Is(err, os.ErrDeadlineExceeded)
}

// keepUnread keeps a client whose request Pause interrupted, with the
// bytes read so far; if Resume came first, it reads on at once.
func (l *Listener) keepUnread(conn *Conn, prefix []byte, out chan<- Request, done func()) {
	l.pmu.Lock()
	if l.paused {
		l.unread = append(l.unread, unread{conn: conn, prefix: prefix})
		l.pmu.Unlock()
		return
	}
	l.pmu.Unlock()
	l.handle(conn, prefix, out, done)
}

// Resume lets Serve accept again after Pause, and read on the clients
// Pause interrupted.
func (l *Listener) Resume() {
	l.pmu.Lock()
	defer l.pmu.Unlock()
	if !l.paused {
		return
	}
	l.paused = false
	l.hold = make(chan struct{})
	l.ln.SetDeadline(time.Time{})
	close(l.resumed)
}

func (l *Listener) isPaused() bool {
	l.pmu.Lock()
	defer l.pmu.Unlock()
	return l.paused
}

// waitWhilePaused is Serve's side: while paused it says so once (parked)
// and waits for Resume. It returns false when the listener is closed.
func (l *Listener) waitWhilePaused() bool {
	l.pmu.Lock()
	if !l.paused {
		l.pmu.Unlock()
		return true
	}
	parked, resumed := l.parked, l.resumed
	l.pmu.Unlock()
	select {
	case <-parked:
	default:
		close(parked)
	}
	select {
	case <-resumed:
		return true
	case <-l.done:
		return false
	}
}
