package control

import (
	"time"
)

// Pause stops Serve accepting, for a re-exec: clients that connect from
// now on wait in the socket's listen queue, which the next image inherits
// and serves. It then waits, at most wait, until every client already
// accepted has been read and either sent to Serve's channel or answered,
// so that draining the channel afterwards finds every request this image
// took. It reports whether all of them were done in time; a client that
// has not sent its line by then is dropped by the execve.
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
	l.parked = make(chan struct{})
	l.resumed = make(chan struct{})
	parked := l.parked
	l.pmu.Unlock()
	// Interrupt an accept in progress.
	l.ln.SetDeadline(time.Now())

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

// handled ends a client's handling (sent on, answered or dropped).
func (l *Listener) handled() {
	l.pmu.Lock()
	defer l.pmu.Unlock()
	l.inflight--
	if l.inflight == 0 && l.drained != nil {
		close(l.drained)
		l.drained = nil
	}
}

// Resume lets Serve accept again after Pause.
func (l *Listener) Resume() {
	l.pmu.Lock()
	defer l.pmu.Unlock()
	if !l.paused {
		return
	}
	l.paused = false
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
