/*
Package fsm is the decision core of mworker: a pure state machine that
decides everything the master does and does none of it.

A Machine takes events in through one door, [Machine.Step], and returns the
actions the caller must carry out, in order. It never reads a clock, never
touches a process, a file or a socket, and never starts a goroutine: time
is a timer it asks for and an event it gets back, and every outcome (a
spawn, an exec, a signal delivered) comes back as an event. The same events
from the same Config always give the same actions, which is what lets the
golden scenarios in testdata/ and the property tests in proptest/ check it
without an operating system. The transition table is built once on
github.com/qmuntal/stateless; [Graph] draws it.

# Usage

Build a machine with [New] and feed it [Start]:

	m, err := fsm.New(fsm.Config{Workers: 4, Path: exe, Argv: os.Args, ...})
	if err != nil {
		// err wraps ErrConfig and names the bad field
	}
	for _, a := range m.Step(fsm.Start{}) {
		// carry out a
	}

From then on the caller has a few responsibilities.

 1. Feed every event from one goroutine, one Step at a time: a Machine is
    not safe for concurrent use. Start is the first event. Events fed
    before it are held and handled, in order, right after it, so that a
    signal caught while the caller is still setting up is not lost.

 2. Carry out the actions of a Step in the order they come, all of them,
    before feeding the next event, except the outcomes that the actions
    themselves ask for (duty 3). The slice returned by Step belongs to the
    caller.

 3. Spawn{Generation, Slot}: start one worker in its own process group
    (MWORKER_GENERATION and MWORKER_SLOT set, listeners as fd 3..). Report
    the outcome before any other event: WorkerStarted with its pid, or
    SpawnFailed with the status the failure stands for (127 command not
    found, 126 not executable, 1 otherwise) and a one-line reason. When a
    Step returns several Spawns, report each outcome in the same order.
    Other events that arrive meanwhile wait in the caller's queue.

 4. Kill{Pids, Signal}: send Signal to the process group of each pid
    (kill(-pid, sig)), so that a shell wrapper and the server it started
    both hear it. Every pid is a child the machine believes alive, never
    <= 0. A pid already dead (ESRCH) needs nothing: its exit is on its way
    through wait4.

 5. SignalPids{Pids, Signal}: send Signal to each pid itself, not to a
    group: these are the -sf/-st processes of another master, not our
    children. Errors are only worth a log line.

    StopListening{}: a stop has begun; close your own copies of the
    listening sockets the workers share (not theirs), so that new
    connections are refused once the workers stop accepting.

    Suspend{Signal}: a job-control signal (SIGTSTP, SIGTTIN, SIGTTOU) was
    forwarded; stop your own process (SIGSTOP to yourself), as the kernel
    stops a shell job, unless your process group is orphaned (no process
    in it has a parent in another group of your session), where nothing
    could continue you. SIGCONT, which you forward, continues you.

 6. SetTimer{Timer, After} and CancelTimer{Timer}: keep a set of timers
    keyed by the Timer value (it is comparable). SetTimer arms the key to
    fire After from now on the monotonic clock, replacing any deadline it
    had; CancelTimer removes it. When a deadline passes and the key is
    still armed with that deadline, remove it and feed TimerFired{Timer}.
    Drop a firing that was already queued when its key was cancelled or
    re-armed: the machine ignores a TimerFired for a key it has not armed,
    but cannot tell an old firing of a re-armed key from the new one.

 7. Notify{State, Status}: when the service manager gave the master a
    NOTIFY_SOCKET, send READY=1 (with MAINPID=<the master's pid> the first
    time), RELOADING=1 with MONOTONIC_USEC=<now>, or STOPPING=1, and
    STATUS=<Status> when Status is not empty. Without a socket, nothing.

 8. Reply{ID, OK, Error, Status}: write the answer to the control
    connection the request with that ID came from, then close it. A
    status reply carries the machine's view; add what only the caller
    knows (the master's pid, uptimes). Every ControlRequest gets exactly
    one Reply, possibly much later: a reload request is answered when the
    reload has succeeded or failed, in the next image if need be (duty 9).
    If the client has gone, drop the reply.

 9. Exec{Path, Argv, Handover}: re-execute the master, execve(Path, Argv,
    env). It is the last action of its Step, and nothing but ExecFailed may
    follow it on this machine. Before the execve, the caller:
    encodes the Handover into the new image's environment; records the
    deadline of every timer in Handover.Timers; keeps the listeners, the
    control socket and the connections of Handover.Requests open across
    the exec (close-on-exec cleared, fds named in the environment); blocks
    SIGUSR1 and SIGUSR2 on the thread that execs and ignores SIGHUP, so
    that a reload or stop signal sent in the window waits for the new
    image instead of killing it. If execve returns, undo all that and feed
    ExecFailed{Err}: the machine stays Running with the same workers and
    answers the waiting requests with the error. Do not feed anything else
    between Exec and ExecFailed: the machine holds such events until
    ExecFailed, and they are lost if the exec succeeds. So leave in the
    kernel what can wait there: do not reap children in that window (the
    new image's wait4 finds them), and hand over control requests already
    read. If it succeeds, the
    new image builds a new Machine from its own command line (Argv is the
    Exec's argv, whose -sf list names every live worker; the CLI parses it
    into Config.StopPids as usual) with Config.Resume set to the decoded
    Handover, arms Handover.Timers at their original deadlines (one whose
    deadline has passed fires at once), and feeds Start. The new machine
    adopts the workers the Handover lists (pids of the -sf list that it
    knows are never signalled as foreign), starts the next generation and
    stops the old one only once the new one is ready.

 10. Log{Level, Msg, Attrs}: hand it to log/slog as it is:
    logger.Log(ctx, slog.Level(a.Level), a.Msg, a.Attrs...).

 11. Exit{Status}: the last action the machine ever emits; every event
    after it is ignored. Carry out the other actions of that Step first
    (they come before it), then exit the process with Status.

And it must report everything the machine needs to know:

 12. Every child reaped by wait4(-1): ChildExited{Pid, Status}, whether
    the machine knows the pid or not (an orphan reparented to a subreaper
    is reaped and ignored). Status is the exit code, or the signal that
    killed it. When wait4 says ECHILD, NoChildren: workers the machine
    still knows then count as exited with status 255, with the usual
    consequences (a restart, a rollback, the end of the run), since wait4
    can never report them.

 13. Every signal the master catches: SignalReceived. Subscribe to
    [CatchableSignals]; [RouteOf] says what the machine will do with each,
    for the operator's documentation. SIGCHLD drives the reaper; feeding
    it is harmless. Set HangUp on a SIGHUP that comes with your
    controlling terminal gone (hung up): the machine then ends the run as
    on SIGTERM instead of reloading.

 14. READY=1 from a worker's notify socket (--ready notify):
    WorkerReady{Pid}. With Config.Watchdog set, give each worker a notify
    socket and WATCHDOG_USEC (the watchdog in microseconds), and feed its
    WATCHDOG=1 as WorkerWatchdog{Pid} and its WATCHDOG=trigger as
    WorkerWatchdog{Pid, Trigger: true}. A control request line: ControlRequest{ID, Command, Arg}
    with an ID unique among requests not yet answered, kept across an
    exec; [ParseCommand] reads the line, and a line it does not know may be
    answered by the caller or fed as an unknown Command, which the machine
    refuses with one clear error.

# What the machine promises

Kill targets only live children the machine knows, never a pid <= 0. Old
workers are told to stop only after the whole new generation is ready; if
it fails, they are never signalled and serve on. Every reload, stop and
terminate request is acted on or answered. Exit comes once, last, and only
when no known child can still be alive (all reaped, or wait4 said none is
left).
Events that make no sense in the current state (a ready from an unknown
pid, a timer that is not armed, a spawn outcome nobody asked for) are
ignored with a debug Log, never a panic. The project's docs/design.md
(section "Invariants") states these invariants in full, numbered as
proptest/ numbers them; proptest/ checks them over random event sequences
and testdata/*.txt shows them as readable traces.
*/
package fsm
