package osadapter

import (
	"context"
	"log/slog"
	"runtime"
	"time"

	"github.com/mworker/mworker/fsm"
	"github.com/mworker/mworker/internal/control"
)

// controlSocket is the master's end of --control (see internal/control's
// numbered duties): Serve runs on its own goroutine and hands each valid
// request to the loop on in; the loop keeps the client until the machine
// replies.
type controlSocket struct {
	ln    *control.Listener
	in    chan control.Request
	conns map[fsm.RequestID]*control.Conn // clients waiting for their Reply
	// queued are requests the machine has not seen: taken from in (and
	// the listener's held ones) just before an execve, for the next image,
	// which feeds them right after Start, or for this one to feed after
	// ExecFailed; and in a new image, those the previous one handed over.
	queued []control.Request
}

// openControl opens the control socket at path: bound afresh, or taken
// over from the image that exec'd this one with the clients still waiting
// for their reload's outcome.
func openControl(path string, log *slog.Logger) (*controlSocket, error) {
	ln, pending, err := control.Open(path)
	if err != nil {
		return nil, err
	}
	ln.Logger = log
	if pending == nil {
		pending = make(map[fsm.RequestID]*control.Conn)
	}
	return &controlSocket{ln: ln, in: make(chan control.Request, 64), conns: pending, queued: ln.Queued()}, nil
}

func (c *controlSocket) serve(log *slog.Logger) {
	if err := c.ln.Serve(c.in); err != nil {
		log.Error("control socket stopped accepting", "path", c.ln.Path(), "err", err.Error())
	}
}

// onRequest feeds a request to the machine and keeps its client.
func (l *loop) onRequest(r control.Request) {
	l.ctl.conns[r.ID] = r.Conn
	if r.Command == fsm.CmdReload {
		l.noteImage()
	}
	l.step(fsm.ControlRequest{ID: r.ID, Command: r.Command, Arg: r.Arg})
}

// answer carries out a Reply: the answer, with the facts only the adapter
// knows, goes to the client that asked; a Reply whose client is gone is
// dropped.
func (l *loop) answer(r fsm.Reply) {
	conn, ok := l.ctl.conns[r.ID]
	if !ok {
		l.logf(slog.LevelDebug, "control reply dropped: no client waits for it", "action", r.String())
		return
	}
	delete(l.ctl.conns, r.ID)
	facts := control.Facts{MasterPid: l.sys.Getpid(), DroppedLogLines: l.out.q.droppedLines(), DroppedWorkerLines: l.wout.dropped.Load(), Goroutines: runtime.NumGoroutine()}
	if r.Status != nil {
		now := l.sys.Now()
		facts.Uptime = make(map[int]time.Duration, len(r.Status.Workers))
		for _, w := range r.Status.Workers {
			if at, ok := l.spawned[w.Pid]; ok {
				facts.Uptime[w.Pid] = time.Duration(now - at)
			}
		}
	}
	if err := control.Respond(conn, r, facts); err != nil {
		// The client went away, or does not read: nothing to do for it.
		l.logf(slog.LevelDebug, "cannot answer a control request", "action", r.String(), "err", err.Error())
	}
}

// prepareExec hands the control socket, the clients of the reload requests
// the machine hands over, and the requests it has not seen to the next
// image. undo runs after a failed execve; the loop then feeds the queued
// requests (requeue).
//
// The reload requests among those the machine has not seen join this
// reload: coalesced returns their IDs, which the caller adds to the
// handover's Requests, and the next image answers them with this reload's
// outcome, as the machine answers a reload requested before the one under
// way begins. They were sent before this reload began, so its outcome is
// theirs. Handed over as requests to feed instead, each would make the
// next image re-execute at once, and a storm of N requests read during
// one re-exec would become N re-execs in a row, one request each.
func (c *controlSocket) prepareExec(requests []fsm.RequestID, log *slog.Logger) (env []string, coalesced []fsm.RequestID, undo func(), err error) {
	// Stop accepting first: clients that connect from now on wait in the
	// listen queue for the next image; those already accepted are held
	// with their request, or kept unread for the next image to read, so
	// that the drain below and Held find every request this image took.
	if !c.ln.Pause(pauseWait) {
		log.Log(context.Background(), slog.LevelWarn, "control: a client accepted before the re-exec was not handed over in time; it will see its connection close", "waited", pauseWait)
	}
	// Requests not fed yet (a re-exec while requeue feeds them) stay
	// first: they are the oldest.
	for drained := false; !drained; {
		select {
		case r := <-c.in:
			c.queued = append(c.queued, r)
		default:
			drained = true
		}
	}
	c.queued = append(c.queued, c.ln.Held()...)
	pending := make(map[fsm.RequestID]*control.Conn, len(requests))
	for _, id := range requests {
		if conn, ok := c.conns[id]; ok {
			pending[id] = conn
		}
	}
	var queued []control.Request
	for _, r := range c.queued {
		if r.Command == fsm.CmdReload {
			pending[r.ID] = r.Conn
			coalesced = append(coalesced, r.ID)
		} else {
			queued = append(queued, r)
		}
	}
	h, err := c.ln.PrepareExec(pending, queued)
	if err != nil {
		c.ln.Resume()
		return nil, nil, nil, errorf("keep the control socket across the re-exec: %w", err)
	}
	return h.Env, coalesced, func() { h.Undo(); c.ln.Resume() }, nil
}

// pauseWait bounds how long a re-exec waits for the goroutines of the
// control clients already accepted to hold or keep them. They do nothing
// that blocks, so the wait is their scheduling: well under a millisecond
// on an idle machine, and the bound is for a machine so loaded that they
// are not run for a long while.
const pauseWait = time.Second

// requeue feeds the requests the machine has not seen: after a failed
// execve, those prepareExec took; in a new image, right after Start, those
// the previous image handed over.
//
// One at a time: a request may re-execute the master, and those not fed
// yet are then handed over with the rest.
func (l *loop) requeue() {
	for l.ctl != nil && len(l.ctl.queued) > 0 && !l.done() {
		r := l.ctl.queued[0]
		l.ctl.queued = l.ctl.queued[1:]
		l.onRequest(r)
	}
}

// close ends the control socket at the master's exit: the file goes, and
// any client still waiting is dropped.
func (c *controlSocket) close(log *slog.Logger) {
	if err := c.ln.Close(); err != nil {
		log.Log(context.Background(), slog.LevelDebug, "close control socket", "err", err.Error())
	}
	for id, conn := range c.conns {
		conn.Close()
		delete(c.conns, id)
	}
}
