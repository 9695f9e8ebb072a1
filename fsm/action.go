package fsm

import (
	"strconv"
	"strings"
	"time"
)

// Action is something the caller must do, in the order Step returned it.
// The set of actions is closed: only the types in this file implement it.
type Action interface {
	isAction()
	String() string
}

// Spawn starts one worker for (Generation, Slot). The caller reports the
// outcome with WorkerStarted or SpawnFailed before the next event.
type Spawn struct{ Generation, Slot int }

// Kill sends Signal to each worker in Pids (to its process group). Every pid
// is a child the machine believes alive; never <= 0.
type Kill struct {
	Pids   []int
	Signal Signal
}

// SignalPids sends Signal to processes that are not the master's children:
// the -sf/-st pids of a HAProxy-style hand-off from another master. The
// caller signals each pid itself, not a group.
type SignalPids struct {
	Pids   []int
	Signal Signal
}

// Exec replaces the master's image: execve(Path, Argv, env) where env is the
// caller's own environment plus the encoded Handover and whatever the caller
// needs to keep (listener and control fds, timer deadlines, request
// connections). Nothing but ExecFailed may follow.
type Exec struct {
	Path     string
	Argv     []string
	Handover Handover
}

// Exit ends the master with Status. It is the last action the machine emits.
type Exit struct{ Status int }

// SetTimer arms Timer to fire After from now (monotonic clock). Setting an
// armed timer re-arms it.
type SetTimer struct {
	Timer Timer
	After time.Duration
}

// CancelTimer disarms Timer; a timer that is not armed is ignored.
type CancelTimer struct{ Timer Timer }

// StopListening tells the caller that a stop has begun: it closes its own
// copies of the listening sockets, so that once the workers stop accepting
// a new connection is refused at once rather than queued in a backlog
// nobody accepts from. It comes once, as the master enters Exiting.
type StopListening struct{}

// Suspend stops the master itself, as a shell job stops on Signal (SIGTSTP,
// SIGTTIN or SIGTTOU), once the signal has been forwarded: the shell that
// runs the master as a job sees it stop, and SIGCONT continues it. The
// caller does it as the kernel would for a process that leaves Signal at
// its default: not when the master's process group is orphaned (nothing
// could continue it: PID 1, a service), where the kernel discards these
// signals.
type Suspend struct{ Signal Signal }

// Notify tells the service manager (sd_notify) about the master's state.
type Notify struct {
	State  NotifyState
	Status string // free text for STATUS=, may be empty
}

// NotifyState is one of the sd_notify states the master reports.
type NotifyState int

// The sd_notify states.
const (
	NotifyReady     NotifyState = iota + 1 // READY=1 (+ MAINPID on the first)
	NotifyReloading                        // RELOADING=1 + MONOTONIC_USEC
	NotifyStopping                         // STOPPING=1
)

func (n NotifyState) String() string {
	switch n {
	case NotifyReady:
		return "READY"
	case NotifyReloading:
		return "RELOADING"
	case NotifyStopping:
		return "STOPPING"
	}
	return "notify(" + itoa(int(n)) + ")"
}

// Reply answers a control request. Status is set for a status request;
// Reload for a reload request, with how the reload that covered it ended
// (nil when none began: refused, or aborted while still queued).
type Reply struct {
	ID     RequestID
	OK     bool
	Error  string
	Status *Status
	Reload *ReloadOutcome
}

// Log is a line for the operator. Attrs alternate keys and values, as
// log/slog takes them.
type Log struct {
	Level Level
	Msg   string
	Attrs []any
}

// Level is a log level; the values match log/slog's.
type Level int

// The log levels.
const (
	LevelDebug Level = -4
	LevelInfo  Level = 0
	LevelWarn  Level = 4
	LevelError Level = 8
)

func (l Level) String() string {
	switch l {
	case LevelDebug:
		return "debug"
	case LevelInfo:
		return "info"
	case LevelWarn:
		return "warn"
	case LevelError:
		return "error"
	}
	return "level(" + itoa(int(l)) + ")"
}

// Timer names one timer. Timers are comparable values: the caller keys its
// timer set on them.
type Timer struct {
	Kind       TimerKind
	Generation int // TimerRestart, TimerReadyTimeout, TimerKill, TimerRestartWindow
	Slot       int // TimerRestart, TimerRestartWindow
	Pid        int // TimerReadyAfter, TimerStable, TimerQuick, TimerKillWorker, TimerWatchdog
}

// TimerKind says what a timer is for.
type TimerKind int

// The timer kinds.
const (
	// TimerRestart restarts slot Slot of generation Generation after a backoff.
	TimerRestart TimerKind = iota + 1
	// TimerStable resets a slot's backoff once worker Pid has stayed up long enough.
	TimerStable
	// TimerReadyAfter marks worker Pid ready (--ready DURATION).
	TimerReadyAfter
	// TimerReadyTimeout rolls back generation Generation if it is not ready.
	TimerReadyTimeout
	// TimerKill sends SIGKILL to the stopping workers of generation Generation.
	TimerKill
	// TimerKillAll sends SIGKILL to every child left while the master exits.
	TimerKillAll
	// TimerRestartWindow closes the --restart-limit window that slot Slot
	// of generation Generation opened with its first failure.
	TimerRestartWindow
	// TimerQuick ends the first second (QuickDeath) of restarted worker
	// Pid: a death before it fires counts as quick.
	TimerQuick
	// TimerKillWorker sends SIGKILL to worker Pid, told to stop on its own
	// (scaled down, or replaced by the watchdog), if it is still alive.
	TimerKillWorker
	// TimerWatchdog replaces worker Pid, which has sent WATCHDOG=1 before,
	// when it sends none for Config.Watchdog; each ping re-arms it.
	TimerWatchdog
	// TimerShutdownDelay ends Config.ShutdownDelay: the stop that began it
	// is carried out (the workers are told) when it fires.
	TimerShutdownDelay
)

var timerKindNames = [...]string{
	TimerRestart: "restart", TimerStable: "stable", TimerReadyAfter: "ready-after",
	TimerReadyTimeout: "ready-timeout", TimerKill: "kill", TimerKillAll: "kill-all",
	TimerRestartWindow: "restart-window", TimerQuick: "quick", TimerKillWorker: "kill-worker",
	TimerWatchdog: "watchdog", TimerShutdownDelay: "shutdown-delay",
}

func (k TimerKind) String() string {
	if k > 0 && int(k) < len(timerKindNames) {
		return timerKindNames[k]
	}
	return "timer(" + itoa(int(k)) + ")"
}

func (t Timer) String() string {
	s := t.Kind.String()
	switch t.Kind {
	case TimerRestart, TimerRestartWindow:
		s += " gen=" + itoa(t.Generation) + " slot=" + itoa(t.Slot)
	case TimerStable, TimerReadyAfter, TimerQuick, TimerKillWorker, TimerWatchdog:
		s += " pid=" + itoa(t.Pid)
	case TimerReadyTimeout, TimerKill:
		s += " gen=" + itoa(t.Generation)
	}
	return s
}

func (Spawn) isAction()         {}
func (Kill) isAction()          {}
func (SignalPids) isAction()    {}
func (Exec) isAction()          {}
func (Exit) isAction()          {}
func (SetTimer) isAction()      {}
func (CancelTimer) isAction()   {}
func (Notify) isAction()        {}
func (StopListening) isAction() {}
func (Suspend) isAction()       {}
func (Reply) isAction()         {}
func (Log) isAction()           {}

func (a Spawn) String() string {
	return "spawn gen=" + itoa(a.Generation) + " slot=" + itoa(a.Slot)
}
func (a Kill) String() string { return "kill " + a.Signal.String() + " " + pidList(a.Pids) }
func (a SignalPids) String() string {
	return "signal-pids " + a.Signal.String() + " " + pidList(a.Pids)
}
func (a Exec) String() string {
	return "exec " + a.Path + " " + strings.Join(a.Argv, " ")
}
func (a Exit) String() string { return "exit " + itoa(a.Status) }
func (a SetTimer) String() string {
	return "set-timer " + a.Timer.String() + " after=" + a.After.String()
}
func (a CancelTimer) String() string {
	return "cancel-timer " + a.Timer.String()
}
func (StopListening) String() string { return "stop-listening" }
func (a Suspend) String() string     { return "suspend " + a.Signal.String() }

func (a Notify) String() string {
	s := "notify " + a.State.String()
	if a.Status != "" {
		s += " status=" + strconv.Quote(a.Status)
	}
	return s
}
func (a Reply) String() string {
	s := "reply id=" + strconv.FormatUint(uint64(a.ID), 10)
	if a.OK {
		s += " ok"
	} else {
		s += " error=" + strconv.Quote(a.Error)
	}
	if a.Status != nil {
		s += " " + a.Status.String()
	}
	if a.Reload != nil {
		s += " " + a.Reload.String()
	}
	return s
}
func (a Log) String() string {
	var b strings.Builder
	b.WriteString("log ")
	b.WriteString(a.Level.String())
	b.WriteString(" ")
	b.WriteString(strconv.Quote(a.Msg))
	for i := 0; i+1 < len(a.Attrs); i += 2 {
		b.WriteString(" ")
		b.WriteString(toString(a.Attrs[i]))
		b.WriteString("=")
		b.WriteString(toString(a.Attrs[i+1]))
	}
	return b.String()
}

func toString(v any) string {
	switch v := v.(type) {
	case string:
		if v == "" || strings.ContainsAny(v, " \"=") {
			return strconv.Quote(v)
		}
		return v
	case int:
		return itoa(v)
	case bool:
		return strconv.FormatBool(v)
	case []int:
		return pidList(v)
	case interface{ String() string }:
		return v.String()
	}
	return "?"
}

func pidList(pids []int) string {
	var b strings.Builder
	b.WriteByte('[')
	for i, p := range pids {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(itoa(p))
	}
	b.WriteByte(']')
	return b.String()
}
