package osadapter

import (
	"runtime"
	"runtime/debug"
	"strconv"
	"time"

	"github.com/mworker/mworker/fsm"
	"github.com/mworker/mworker/internal/control"
)

// What status and a reload's answer say that needs the adapter: the
// clock (the master's start, when each reload began and ended), the
// version running, the listeners, the workers' STATUS= texts, the client
// that asked for a reload. Each image hands these to the next in
// execState (statusState).

// statusState is what status needs from the images before this one.
type statusState struct {
	// StartWall is the master's first start (Unix ns); StartMono the same
	// instant on CLOCK_MONOTONIC, for its uptime.
	StartWall, StartMono int64
	// ReloadSeq is the number of reloads begun (fsm.Machine.ReloadSeqs)
	// when the one under way began, at ReloadStart (CLOCK_MONOTONIC ns).
	ReloadSeq   int
	ReloadStart int64
	// LastSeq is the last reload that ended, at LastAt (Unix ns), after
	// LastTook.
	LastSeq  int
	LastAt   int64
	LastTook time.Duration
	// StatusText is each live worker's last STATUS=, by pid.
	StatusText map[int]string
}

// resumeStatus takes over what the previous image knew, or starts afresh.
func (l *loop) resumeStatus(st *execState) {
	if st != nil && st.Status.StartWall != 0 {
		l.st = st.Status
	} else {
		l.st = statusState{StartWall: time.Now().UnixNano(), StartMono: l.sys.Now()}
		if st != nil { // an image that did not hand this over: its reloads began no later than now
			l.st.ReloadStart = l.st.StartMono
			l.st.ReloadSeq = -1
		}
	}
	if l.st.StatusText == nil {
		l.st.StatusText = make(map[int]string)
	}
}

// handStatus is statusState for the next image: the texts of the workers
// it adopts.
func (l *loop) handStatus(workers []fsm.HandoverWorker) statusState {
	st := l.st
	st.StatusText = make(map[int]string, len(workers))
	for _, w := range workers {
		if t, ok := l.st.StatusText[w.Pid]; ok {
			st.StatusText[w.Pid] = t
		}
	}
	return st
}

// noteReloads times the reloads: after each step (and before an exec,
// the last action of its step), a reload begun since is timed from now,
// and one ended since is timed until now. The end is noted first: a
// queued reload begins in the step that ends the one before it.
func (l *loop) noteReloads() {
	begun, ended := l.m.ReloadSeqs()
	if ended != l.st.LastSeq {
		now := l.sys.Now()
		l.st.LastSeq, l.st.LastAt, l.st.LastTook = ended, time.Now().UnixNano(), time.Duration(now-l.st.ReloadStart)
	}
	if begun != l.st.ReloadSeq {
		l.st.ReloadSeq, l.st.ReloadStart = begun, l.sys.Now()
	}
}

// reloadTook is how long the reload under way, or just ended in this
// step, has taken.
func (l *loop) reloadTook() time.Duration {
	if begun, _ := l.m.ReloadSeqs(); begun != l.st.ReloadSeq {
		// Begun in this step (not noted yet): an exec that failed at once.
		return 0
	}
	return time.Duration(l.sys.Now() - l.st.ReloadStart)
}

// requester names the client of a control request, for the trigger of
// the reload it asks for.
func requester(c *control.Conn) string {
	if c == nil {
		return "control client"
	}
	if pid := c.PeerPid(); pid > 0 {
		return "control client pid " + strconv.Itoa(pid)
	}
	return "control client"
}

// facts are what only the adapter knows about an answer to r.
func (l *loop) facts(r fsm.Reply) control.Facts {
	f := control.Facts{MasterPid: l.sys.Getpid(), DroppedLogLines: l.out.q.droppedLines(), DroppedWorkerLines: l.wout.dropped.Load(), Goroutines: runtime.NumGoroutine()}
	if r.Reload != nil {
		f.ReloadDuration = l.reloadTook()
	}
	if r.Status == nil {
		return f
	}
	now := l.sys.Now()
	f.Uptime = make(map[int]time.Duration, len(r.Status.Workers))
	for _, w := range r.Status.Workers {
		if at, ok := l.spawned[w.Pid]; ok {
			f.Uptime[w.Pid] = time.Duration(now - at)
		}
	}
	f.Version = l.version
	f.StartTime = time.Unix(0, l.st.StartWall)
	f.MasterUptime = time.Duration(now - l.st.StartMono)
	for i, o := range l.fds.listeners {
		f.Listeners = append(f.Listeners, control.Socket{Name: o.name, Address: o.addr, Fd: 3 + i})
	}
	f.StatusText = l.st.StatusText
	if r.Status.LastReload != nil && r.Status.LastReload.Seq == l.st.LastSeq && l.st.LastAt != 0 {
		f.LastReloadTime, f.LastReloadDuration = time.Unix(0, l.st.LastAt), l.st.LastTook
	}
	return f
}

// buildVersion is the module version this binary was built from, or
// "devel": the version of a Config that does not give one.
func buildVersion() string {
	info, ok := debug.ReadBuildInfo()
	if !ok || info.Main.Version == "" || info.Main.Version == "(devel)" {
		return "devel"
	}
	return info.Main.Version
}
