package osadapter

import (
	"bytes"
	"io"
	"sync"
)

// heldWriter stands between the logger and stderr. While the loop performs
// the actions of one event it holds every line back and writes them all
// with one write(2) when the event is done, so that a stop or a reload
// signals the workers before anything is printed, and an exit costs one
// write instead of one per line. Lines come out in the order they were
// logged; lines logged from other goroutines wait for the event too.
//
// The loop flushes before an execve (the next image would not have them)
// and before it answers a control request (its client may read the log
// next), and the hold never outlives an event, so nothing is kept for long.
type heldWriter struct {
	mu   sync.Mutex
	w    io.Writer
	held int // nesting depth: an action's outcome is a nested event
	buf  bytes.Buffer
}

func (h *heldWriter) Write(p []byte) (int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.held > 0 {
		return h.buf.Write(p)
	}
	return h.w.Write(p)
}

// hold starts holding lines back, or one level deeper.
func (h *heldWriter) hold() {
	h.mu.Lock()
	h.held++
	h.mu.Unlock()
}

// release ends one level of hold; at the outermost it writes what was held.
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

// flush writes what is held now, and keeps holding.
func (h *heldWriter) flush() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.flushLocked()
}

func (h *heldWriter) flushLocked() {
	if h.buf.Len() == 0 {
		return
	}
	// A failed write (stderr closed) loses the lines, as it would have
	// lost each of them unbuffered; the master carries on.
	h.w.Write(h.buf.Bytes())
	h.buf.Reset()
	if h.buf.Cap() > 64<<10 {
		h.buf = bytes.Buffer{} // a burst (a reload of 1,024 workers) is not kept
	}
}
