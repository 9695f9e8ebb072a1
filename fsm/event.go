package fsm

import "strconv"

// Event is something that happened, reported to Machine.Step. The set of
// events is closed: only the types in this file implement it.
type Event interface {
	isEvent()
	String() string
}

// Start begins the machine's life. It must be the first event; a second
// Start is ignored. A fresh machine spawns its first generation; a machine
// built with Config.Resume (after a re-exec) adopts the workers it was handed
// and starts the next generation.
type Start struct{}

// SignalReceived reports a signal sent to the master. HangUp marks a
// SIGHUP that came with the master's controlling terminal gone (the
// caller found it hung up): the news of a hangup, which ends the run as
// SIGTERM does, rather than an operator's reload.
type SignalReceived struct {
	Signal Signal
	HangUp bool
}

// WorkerStarted reports that a Spawn succeeded.
type WorkerStarted struct {
	Generation, Slot int
	Pid              int
}

// SpawnFailed reports that a Spawn failed. Status is what the master treats
// the failure as (127 command not found, 126 not executable, 1 otherwise).
type SpawnFailed struct {
	Generation, Slot int
	Status           ExitStatus
	Err              string
}

// WorkerReady reports that a worker declared itself ready (READY=1 on its
// notify socket). Ready of a pid the machine does not know is ignored.
type WorkerReady struct{ Pid int }

// WorkerWatchdog reports that a worker sent WATCHDOG=1 (a keep-alive ping)
// or, with Trigger, WATCHDOG=trigger (it asks to be replaced at once) on its
// notify socket. With Config.Watchdog set, a worker that has pinged once is
// replaced when it stays silent for that long. Of a pid the machine does
// not watch (unknown, stopping, of a retired generation), it is ignored.
type WorkerWatchdog struct {
	Pid     int
	Trigger bool
}

// ChildExited reports a child reaped by wait4: any child, known or not.
type ChildExited struct {
	Pid    int
	Status ExitStatus
}

// NoChildren reports that wait4 returned ECHILD: the master has no child left.
type NoChildren struct{}

// ExecFailed reports that the Exec action did not replace the process.
type ExecFailed struct{ Err string }

// ImageChanged tells the machine whether the binary at Config.Path is
// another image than the one running (an upgrade was installed there), as
// the caller last found it. Under ReexecOnUpgrade the next reload
// re-executes the master only when it is; otherwise the new generation
// starts in place, with no exec. Feed it before each reload signal or
// request; a machine never told assumes the image is unchanged. It yields
// no action.
type ImageChanged struct{ Changed bool }

// TimerFired reports that a timer set by SetTimer reached its deadline and
// was not cancelled.
type TimerFired struct{ Timer Timer }

// ControlRequest is a request from the control socket. The machine answers
// every request with exactly one Reply carrying the same ID. Arg is the
// request's argument ("4" of "scale 4"), "" when it has none; a command
// whose entry of Commands has no Arg refuses one, and one that has an Arg
// requires it.
//
// From names the client for the operator (the adapter's "control client
// pid 4242"); a reload it asks for is logged and reported with it as its
// trigger. "" reads as "control request".
type ControlRequest struct {
	ID      RequestID
	Command Command
	Arg     string
	From    string
}

// requester names the client of c, for a reload's trigger.
func (c ControlRequest) requester() string {
	if c.From == "" {
		return "control request"
	}
	return c.From
}

// RequestID identifies a control request until it is answered. It is
// opaque to the machine and must survive a re-exec (see Handover).
type RequestID uint64

// Command is what a control request asks for.
type Command int

// The control commands.
const (
	CmdReload Command = iota + 1
	CmdStop
	CmdStatus
	CmdScale
	CmdRestart
)

func (c Command) String() string {
	for _, s := range Commands {
		if s.Command == c {
			return s.Name
		}
	}
	return "command(" + strconv.Itoa(int(c)) + ")"
}

// ParseCommand parses a control request line: the Name of an entry of
// Commands.
func ParseCommand(s string) (Command, bool) {
	c, ok := LookupCommand(s)
	return c.Command, ok
}

// ExitStatus is how a child ended: an exit code, or the signal that killed it.
type ExitStatus struct {
	Code   int    // exit code when Signal is 0
	Signal Signal // the terminating signal, or 0
}

// Int is the status as a shell reports it: the exit code, or 128 + signal.
func (s ExitStatus) Int() int {
	if s.Signal != 0 {
		return 128 + int(s.Signal)
	}
	return s.Code
}

// Failed reports whether the child did not exit with code 0.
func (s ExitStatus) Failed() bool { return s.Int() != 0 }

func (s ExitStatus) String() string {
	if s.Signal != 0 {
		return "signal:" + s.Signal.String()
	}
	return "exit:" + strconv.Itoa(s.Code)
}

func (Start) isEvent()          {}
func (SignalReceived) isEvent() {}
func (WorkerStarted) isEvent()  {}
func (SpawnFailed) isEvent()    {}
func (WorkerReady) isEvent()    {}
func (WorkerWatchdog) isEvent() {}
func (ChildExited) isEvent()    {}
func (NoChildren) isEvent()     {}
func (ExecFailed) isEvent()     {}
func (ImageChanged) isEvent()   {}
func (TimerFired) isEvent()     {}
func (ControlRequest) isEvent() {}

func (Start) String() string { return "start" }

// acted is the signal the master acts on: SIGTERM for a hangup's SIGHUP.
func (e SignalReceived) acted() Signal {
	if e.HangUp && e.Signal == SIGHUP {
		return SIGTERM
	}
	return e.Signal
}

func (e SignalReceived) String() string {
	if e.HangUp && e.Signal == SIGHUP {
		return "signal HUP hangup"
	}
	return "signal " + e.Signal.String()
}
func (e WorkerStarted) String() string {
	return "started gen=" + itoa(e.Generation) + " slot=" + itoa(e.Slot) + " pid=" + itoa(e.Pid)
}
func (e SpawnFailed) String() string {
	return "spawn-failed gen=" + itoa(e.Generation) + " slot=" + itoa(e.Slot) + " status=" + e.Status.String() + " err=" + strconv.Quote(e.Err)
}
func (e WorkerReady) String() string { return "ready pid=" + itoa(e.Pid) }
func (e WorkerWatchdog) String() string {
	if e.Trigger {
		return "watchdog pid=" + itoa(e.Pid) + " trigger"
	}
	return "watchdog pid=" + itoa(e.Pid)
}
func (e ChildExited) String() string {
	return "exited pid=" + itoa(e.Pid) + " status=" + e.Status.String()
}
func (NoChildren) String() string   { return "no-children" }
func (e ExecFailed) String() string { return "exec-failed err=" + strconv.Quote(e.Err) }
func (e ImageChanged) String() string {
	return "image changed=" + strconv.FormatBool(e.Changed)
}
func (e TimerFired) String() string { return "timer " + e.Timer.String() }
func (e ControlRequest) String() string {
	s := "control id=" + strconv.FormatUint(uint64(e.ID), 10) + " " + e.Command.String()
	if e.Arg != "" {
		s += " arg=" + strconv.Quote(e.Arg)
	}
	if e.From != "" {
		s += " from=" + strconv.Quote(e.From)
	}
	return s
}

func itoa(i int) string { return strconv.Itoa(i) }
