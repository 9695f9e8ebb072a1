package osadapter

import (
	"context"
	"log/slog"
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
	// queued are requests taken from in just before an execve, which the
	// machine has not seen: the next image's Serve sends them again, or,
	// if the execve fails, the loop feeds them after ExecFailed.
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
	return &controlSocket{ln: ln, in: make(chan control.Request, 64), conns: pending}, nil
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
	l.step(fsm.ControlRequest{ID: r.ID, Command: r.Command})
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
	facts := control.Facts{MasterPid: l.sys.Getpid(), DroppedLogLines: l.out.q.droppedLines()}
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
// the machine hands over, and the requests still in the channel to the
// next image. undo runs after a failed execve; the loop then feeds the
// queued requests (requeue).
func (c *controlSocket) prepareExec(requests []fsm.RequestID, log *slog.Logger) (env []string, undo func(), err error) {
	// Stop accepting first: clients that connect from now on wait in the
	// listen queue for the next image, and those already accepted are read
	// to the end, so that the drain below finds every request this image
	// took.
	if !c.ln.Pause(pauseWait) {
		log.Log(context.Background(), slog.LevelWarn, "control: a client was still sending its request at the re-exec; it will see its connection close")
	}
	c.queued = c.queued[:0]
	for drained := false; !drained; {
		select {
		case r := <-c.in:
			c.queued = append(c.queued, r)
		default:
			drained = true
		}
	}
	pending := make(map[fsm.RequestID]*control.Conn, len(requests))
	for _, id := range requests {
		if conn, ok := c.conns[id]; ok {
			pending[id] = conn
		}
	}
	h, err := c.ln.PrepareExec(pending, c.queued)
	if err != nil {
		c.ln.Resume()
		return nil, nil, errorf("keep the control socket across the re-exec: %w", err)
	}
	return h.Env, func() { h.Undo(); c.ln.Resume() }, nil
}

// pauseWait bounds how long a re-exec waits for control clients already
// accepted to send their request line (a client sends it as it connects).
const pauseWait = 200 * time.Millisecond

// requeue feeds, after a failed execve, the requests prepareExec took from
// the channel.
func (l *loop) requeue() {
	if l.ctl == nil {
		return
	}
	queued := l.ctl.queued
	l.ctl.queued = nil
	for _, r := range queued {
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
