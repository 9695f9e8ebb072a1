package fsm

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/qmuntal/stateless"
)

// state is a node of the transition table.
type state int

const (
	stateIdle          state = iota // before Start
	stateLive                       // superstate: workers are supervised
	stateRunning                    // serving one generation
	stateReloading                  // superstate of the two halves of a reload
	stateExecPending                // Exec emitted; only ExecFailed may follow
	stateAwaitingReady              // the new image waits for its generation
	stateExiting                    // every worker told to stop; waiting for them
	stateExited                     // Exit emitted
)

var stateNames = [...]string{"Idle", "Live", "Running", "Reloading", "ExecPending", "AwaitingReady", "Exiting", "Exited"}

func (s state) String() string { return stateNames[s] }

// trigger is an edge label of the transition table.
type trigger string

const (
	trigStart            trigger = "Start"
	trigReload           trigger = "Reload"
	trigSoftStop         trigger = "SoftStop"
	trigTerminate        trigger = "Terminate"
	trigForward          trigger = "Forward"
	trigSpawned          trigger = "WorkerStarted"
	trigSpawnFailed      trigger = "SpawnFailed"
	trigReady            trigger = "WorkerReady"
	trigFirstReady       trigger = "FirstGenerationReady"
	trigGenerationReady  trigger = "GenerationReady"
	trigGenerationFailed trigger = "GenerationFailed"
	trigExited           trigger = "ChildExited"
	trigOrphan           trigger = "OrphanExited"
	trigRunEnded         trigger = "RunEnded"
	trigAllGone          trigger = "AllChildrenGone"
	trigNoChildren       trigger = "NoChildren"
	trigStopAgain        trigger = "SoftStopAgain"
	trigTerminateAgain   trigger = "TerminateAgain"
	trigExecFailed       trigger = "ExecFailed"
	trigRestart          trigger = "RestartDue"
	trigStable           trigger = "WorkerStable"
	trigWindowClosed     trigger = "RestartWindowClosed"
	trigQuickOver        trigger = "WorkerPastFirstSecond"
	trigKillDue          trigger = "StopTimeout"
	trigStatus           trigger = "Status"
	trigScale            trigger = "Scale"
	trigRestartOne       trigger = "RestartOne"
	trigBatchReady       trigger = "BatchReady"
	trigBatchDrained     trigger = "BatchDrained"
	trigReplaced         trigger = "ReplacementReady"
	trigReplaceFailed    trigger = "ReplacementFailed"
	trigWatchdogPing     trigger = "WatchdogPing"
	trigWatchdogFailed   trigger = "WatchdogFailed"
	trigBadRequest       trigger = "BadRequest"
	trigNoise            trigger = "Noise"
	trigDelayStop        trigger = "StopDelayed"
	trigDelayOver        trigger = "ShutdownDelayOver"
	trigReloadRefused    trigger = "ReloadWhileStopping"
)

// Machine is the supervisor's decision core. It is not safe for concurrent
// use: feed it from one goroutine.
type Machine struct {
	cfg Config
	ctx context.Context

	state    state
	ev       Event    // the event being stepped
	out      []Action // actions of the current step
	deferred []Event  // events held while Idle or ExecPending

	gens     []*generation // live or spawning generations, oldest first
	byPid    map[int]*worker
	inflight map[[2]int]bool // (generation, slot) spawns not yet reported

	cur, next, maxGen int          // serving generation, generation being readied, highest used
	size              int          // desired number of workers: Config.Workers, then scale
	leaving           []*worker    // workers stopping on their own (scaled down), out of every slot table
	repl              *replacement // the restart SLOT in progress, or nil
	// A rolling reload (Config.Batch): slots 0..rollDone-1 of the next
	// generation are ready and their old workers told to stop (rollWait,
	// those of the last batch); rollDone..rollEnd-1 are the batch under way.
	roll              bool
	rollDone, rollEnd int
	rollWait          []int
	failures          []int
	restarting        map[int]bool // slots of cur with a restart timer armed
	armed             map[Timer]bool

	announced     bool
	upgrade       bool        // the binary at Path is another image (ImageChanged)
	pendingReload bool        // a reload arrived during a reload
	requests      []RequestID // reload requests awaiting the outcome
	queued        []RequestID // reload requests for the reload after this one
	derived       bool        // firing a settle transition, not the event
	failure       string      // why the generation being readied failed
	culprit       *ExitStatus // the worker exit that ends the run
	exitStatus    int
	exitFixed     bool
	stopReaped    bool   // a current worker has been reaped since the stop began
	stopSignal    Signal // signal for workers that start while exiting
	// The stop held for Config.ShutdownDelay (shutdown.go): delaying while
	// TimerShutdownDelay runs; heldStop is trigSoftStop or trigTerminate,
	// heldSignal the signal of a held terminate.
	delaying              bool
	heldStop              trigger
	heldSignal            Signal
	reloads, failedReload int
	stopPids, termPids    []int
	gone                  []int // workers wait4 cannot find, while their exits are stepped
	attrs                 []any // chunk the Log actions' attrs are carved from

	rng         uint64 // state of the jitter PRNG, from Config.Seed
	limitCounts []int  // --restart-limit failures per slot of cur in its open window
	quick       []int  // quick deaths in a row per slot of cur
	quickWarned bool   // the quick-death warning was logged
	endWhy      string // why the culprit ends the run, when --restart does not say

	// What status reports about reloads and slots (status.go).
	begun         int             // reloads begun since the first start
	trigger       string          // what asked for the reload under way, "" when none is
	queuedTrigger string          // what asked first for the queued reload
	last          *ReloadOutcome  // how the last reload ended
	restarts      []int           // restarts per slot since the first start
	backoffs      []time.Duration // delay of each slot's last restart, 0 once reset
}

type generation struct {
	n       int
	slots   []*worker
	live    int
	ready   int
	retired bool // told to stop as a whole (old, or rolled back)
	killed  bool // sent SIGKILL for MaxOldGenerations: no longer draining
	failed  bool // rolled back: a reload or a restart SLOT that failed
}

type worker struct {
	pid, gen, slot int
	home           *generation // the slot table it is in (until it leaves)
	ready          bool
	leaving        bool // told to stop on its own; in Machine.leaving, no longer in home's slots
	replacing      bool // stopped by the watchdog; in its slot until reaped (watchdog.go)
	pidAttr        any  // pid boxed once for the log lines about this worker
}

// id is the worker's pid as a log attribute, boxed once per worker.
func (w *worker) id() any {
	if w.pidAttr == nil {
		w.pidAttr = w.pid
	}
	return w.pidAttr
}

// Exit statuses as log attributes, boxed once: every reaped worker logs one.
var (
	boxedCodes   [256]any
	boxedSignals [65]any
)

func init() {
	for i := range boxedCodes {
		boxedCodes[i] = ExitStatus{Code: i}
	}
	for i := range boxedSignals {
		boxedSignals[i] = ExitStatus{Signal: Signal(i)}
	}
}

func statusAttr(st ExitStatus) any {
	switch {
	case st.Signal == 0 && st.Code >= 0 && st.Code < len(boxedCodes):
		return boxedCodes[st.Code]
	case st.Code == 0 && st.Signal > 0 && int(st.Signal) < len(boxedSignals):
		return boxedSignals[st.Signal]
	}
	return st
}

type machineKey struct{}

// New returns a machine for cfg, or an error wrapping ErrConfig that says
// which field is wrong.
func New(cfg Config) (*Machine, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	// The maps are sized for a reload (two generations of workers, each
	// with a timer or two), so that a reload does not rehash them.
	m := &Machine{
		cfg:        cfg,
		byPid:      make(map[int]*worker, 2*cfg.Workers),
		inflight:   make(map[[2]int]bool, cfg.Workers),
		restarting: make(map[int]bool),
		armed:      make(map[Timer]bool, 4*cfg.Workers),
		failures:   make([]int, cfg.Workers),
		stopSignal: cfg.StopSignal,
		stopPids:   slices.Clone(cfg.StopPids),
		termPids:   slices.Clone(cfg.TermPids),
		rng:        cfg.Seed,
		size:       cfg.Workers,
	}
	if cfg.RestartLimit.Count > 0 {
		m.limitCounts = make([]int, cfg.Workers)
	}
	m.ctx = context.WithValue(context.Background(), machineKey{}, m)
	return m, nil
}

// State names the machine's state: "idle", "running", "reloading",
// "exiting" or "exited".
func (m *Machine) State() string {
	switch m.state {
	case stateIdle:
		return "idle"
	case stateExecPending, stateAwaitingReady:
		return "reloading"
	case stateExiting:
		return "exiting"
	case stateExited:
		return "exited"
	}
	return "running"
}

// Step feeds one event to the machine and returns what the caller must do,
// in order. The returned slice belongs to the caller.
func (m *Machine) Step(ev Event) []Action {
	m.out = nil
	m.step(ev)
	out := m.out
	m.out = nil
	return out
}

func (m *Machine) step(ev Event) {
	switch m.state {
	case stateExited:
		return
	case stateIdle:
		if _, ok := ev.(ExecFailed); ok {
			// No exec is pending before Start; held, it would pass for the
			// outcome of an Exec emitted while the held events replay.
			return
		}
		if _, ok := ev.(Start); !ok {
			m.deferred = append(m.deferred, ev)
			return
		}
	case stateExecPending:
		if _, ok := ev.(ExecFailed); !ok {
			m.deferred = append(m.deferred, ev)
			return
		}
	}
	if _, ok := ev.(NoChildren); ok && len(m.byPid) > 0 {
		// wait4 is the authority: a worker it cannot find is dead and its
		// exit was never reported. Step that exit (status unknown: 255) so
		// that restarts, rollbacks and the exit status follow the usual path.
		lost := m.livePids(nil)
		m.log(LevelWarn, "wait4 reports no children, but workers are still known: their exits were lost; treating them as exited with status 255", "pids", lost)
		// While their exits are stepped, the ones not stepped yet are
		// dead too: signal none of them (its group may be reused) and hold
		// a queued reload, whose -sf list would name them.
		m.gone = lost
		for _, pid := range lost {
			m.step(ChildExited{Pid: pid, Status: ExitStatus{Code: 255}})
		}
		m.gone = nil
		m.step(ev)
		return
	}
	if e, ok := ev.(ImageChanged); ok {
		m.upgrade = e.Changed
		return
	}
	m.ev = ev
	t := m.classify(ev)
	if tf, ok := ev.(TimerFired); ok {
		delete(m.armed, tf.Timer)
	}
	m.fire(t)
	m.settle()
	if m.state != stateIdle && m.state != stateExecPending && len(m.deferred) > 0 {
		held := m.deferred
		m.deferred = nil
		for _, e := range held {
			m.step(e)
		}
	}
}

// settle fires the transitions that follow from the data rather than from
// an event: a generation became ready or failed, the run ended, the last
// child is gone, a coalesced reload is due.
func (m *Machine) settle() {
	for {
		switch {
		case m.state == stateAwaitingReady && m.failure != "":
			m.fireDerived(trigGenerationFailed)
		case m.state == stateAwaitingReady && m.genReady(m.next):
			m.fireDerived(trigGenerationReady)
		case m.state == stateAwaitingReady && m.rolling() && m.batchReady():
			m.fireDerived(trigBatchReady)
		case m.state == stateAwaitingReady && m.rolling() && m.batchDrained():
			m.fireDerived(trigBatchDrained)
		case m.state == stateRunning && m.culprit == nil && m.cfg.Restart == RestartOnFailure && m.repl == nil && m.servingGenDone():
			// Every serving worker exited 0 and nothing is coming back (a
			// slot scaled away while its spawn was under way has just
			// failed to start, or left): the run is over, as when the
			// last exit itself leaves the generation empty.
			m.culprit = &ExitStatus{}
		case (m.state == stateRunning || m.state == stateAwaitingReady) && m.culprit != nil:
			m.fireDerived(trigRunEnded)
		case m.state == stateRunning && !m.announced && m.genReady(m.cur):
			m.fireDerived(trigFirstReady)
		case m.state == stateRunning && m.repl != nil && m.repl.failure != "":
			m.fireDerived(trigReplaceFailed)
		case m.state == stateRunning && m.repl != nil && m.replacementReady():
			m.fireDerived(trigReplaced)
		case m.state == stateRunning && m.pendingReload && len(m.inflight) == 0 && m.repl == nil && m.gone == nil && !m.delaying:
			m.fireDerived(trigReload)
		case m.state == stateExiting && len(m.byPid) == 0 && len(m.inflight) == 0:
			m.fireDerived(trigAllGone)
		default:
			return
		}
	}
}

func (m *Machine) fireDerived(t stateless.Trigger) {
	m.derived = true
	m.fire(t)
	m.derived = false
}

// fire takes the trigger as an interface so that callers convert constants,
// which costs no allocation, rather than a variable.
func (m *Machine) fire(t stateless.Trigger) {
	if err := table().FireCtx(m.ctx, t); err != nil {
		// Every callback returns nil and unhandled triggers are logged, so
		// an error here is a bug in the table; say so rather than panic.
		m.log(LevelError, "fsm: transition failed", "state", m.state.String(), "trigger", string(t.(trigger)), "err", err.Error())
	}
}

// again names a stop that arrives while the machine is already exiting:
// its own edge, so that the graph does not show the entry actions on it.
func (m *Machine) again(t trigger) stateless.Trigger {
	if m.state != stateExiting {
		return t
	}
	if t == trigTerminate {
		return trigTerminateAgain
	}
	return trigStopAgain
}

// classify turns an event into the trigger the table routes on, updating
// nothing.
func (m *Machine) classify(ev Event) stateless.Trigger {
	switch e := ev.(type) {
	case Start:
		return trigStart
	case SignalReceived:
		switch RouteOf(e.acted()) {
		case RouteReload:
			return m.unlessDelaying(trigReload)
		case RouteSoftStop:
			return m.delayed(m.again(trigSoftStop))
		case RouteTerminate:
			return m.delayed(m.again(trigTerminate))
		case RouteForward:
			return trigForward
		}
		return trigNoise
	case WorkerStarted:
		if !m.inflight[[2]int{e.Generation, e.Slot}] || e.Pid <= 0 || m.byPid[e.Pid] != nil {
			return trigNoise
		}
		return trigSpawned
	case SpawnFailed:
		if !m.inflight[[2]int{e.Generation, e.Slot}] {
			return trigNoise
		}
		return trigSpawnFailed
	case WorkerReady:
		if w := m.byPid[e.Pid]; w == nil || w.ready || w.leaving || w.replacing || w.home.retired {
			return trigNoise
		}
		return trigReady
	case WorkerWatchdog:
		return m.watchdogTrigger(e.Pid, e.Trigger)
	case ChildExited:
		if m.byPid[e.Pid] == nil {
			return trigOrphan
		}
		return trigExited
	case NoChildren:
		return trigNoChildren
	case ExecFailed:
		return trigExecFailed
	case TimerFired:
		if !m.armed[e.Timer] {
			return trigNoise
		}
		switch e.Timer.Kind {
		case TimerRestart:
			return trigRestart
		case TimerStable:
			return trigStable
		case TimerReadyAfter:
			if w := m.byPid[e.Timer.Pid]; w == nil || w.ready || w.leaving || w.replacing || w.home.retired {
				return trigNoise
			}
			return trigReady
		case TimerReadyTimeout:
			if m.repl != nil && e.Timer.Generation == m.repl.gen {
				return trigReplaceFailed
			}
			return trigGenerationFailed
		case TimerKill, TimerKillAll:
			return trigKillDue
		case TimerKillWorker:
			if w := m.byPid[e.Timer.Pid]; w == nil || !w.leaving && !w.replacing {
				return trigNoise
			}
			return trigKillDue
		case TimerWatchdog:
			return m.watchdogTrigger(e.Timer.Pid, true)
		case TimerRestartWindow:
			return trigWindowClosed
		case TimerQuick:
			return trigQuickOver
		case TimerShutdownDelay:
			if !m.delaying {
				return trigNoise
			}
			return trigDelayOver
		}
		return trigNoise
	case ControlRequest:
		if requestError(e) != "" {
			return trigBadRequest
		}
		switch e.Command {
		case CmdReload:
			return m.unlessDelaying(trigReload)
		case CmdStop:
			return m.delayed(m.again(trigSoftStop))
		case CmdStatus:
			return trigStatus
		case CmdScale:
			return trigScale
		case CmdRestart:
			return trigRestartOne
		}
		return trigBadRequest
	}
	return trigNoise
}

var (
	tableOnce sync.Once
	theTable  *stateless.StateMachine
)

// table returns the transition table, built once and shared by every
// Machine: each Machine keeps its own state and passes itself in the
// context.
func table() *stateless.StateMachine {
	tableOnce.Do(func() { theTable = buildTable() })
	return theTable
}

func machineOf(ctx context.Context) *Machine { return ctx.Value(machineKey{}).(*Machine) }

// stateOf reads the state for the table; without a machine (ToGraph) it is Idle.
func stateOf(ctx context.Context) (stateless.State, error) {
	if m, ok := ctx.Value(machineKey{}).(*Machine); ok {
		return m.state, nil
	}
	return stateIdle, nil
}

func buildTable() *stateless.StateMachine {
	sm := stateless.NewStateMachineWithExternalStorage(
		stateOf,
		func(ctx context.Context, s stateless.State) error { machineOf(ctx).state = s.(state); return nil },
		stateless.FiringImmediate)
	sm.OnUnhandledTrigger(ignoreEvent)

	sm.Configure(stateIdle).
		Permit(trigStart, stateRunning, isFresh).
		Permit(trigStart, stateAwaitingReady, isResumed)

	sm.Configure(stateLive).
		Permit(trigSoftStop, stateExiting).
		Permit(trigTerminate, stateExiting).
		Permit(trigRunEnded, stateExiting).
		Permit(trigDelayOver, stateExiting).
		InternalTransition(trigDelayStop, do(beginShutdownDelay)).
		InternalTransition(trigReloadRefused, do(refuseReload)).
		InternalTransition(trigForward, on(forwardToCurrent)).
		InternalTransition(trigSpawned, on(recordWorker)).
		InternalTransition(trigSpawnFailed, on(workerFailedToStart)).
		InternalTransition(trigReady, do(markReady)).
		InternalTransition(trigExited, on(workerExited)).
		InternalTransition(trigOrphan, on(reapOrphan)).
		InternalTransition(trigNoChildren, do(noteNoChildren)).
		InternalTransition(trigRestart, on(restartSlot)).
		InternalTransition(trigStable, on(resetBackoff)).
		InternalTransition(trigWindowClosed, on(closeRestartWindow)).
		InternalTransition(trigQuickOver, on(endQuickStreak)).
		InternalTransition(trigKillDue, on(killStragglers)).
		InternalTransition(trigStatus, on(replyStatus)).
		InternalTransition(trigScale, on(scalePool)).
		InternalTransition(trigWatchdogPing, on(rearmWatchdog)).
		InternalTransition(trigWatchdogFailed, do(replaceHungWorker)).
		InternalTransition(trigBadRequest, on(refuseRequest)).
		InternalTransition(trigNoise, do(ignoreNoise))

	sm.Configure(stateRunning).
		SubstateOf(stateLive).
		OnEntryFrom(trigStart, spawnFirstGeneration).
		OnEntryFrom(trigExecFailed, abandonReload).
		OnEntryFrom(trigGenerationReady, promoteGeneration).
		OnEntryFrom(trigGenerationFailed, rollBack).
		Permit(trigReload, stateExecPending, noSpawnInFlight, reloadExecs).
		Permit(trigReload, stateAwaitingReady, noSpawnInFlight, reloadInPlace).
		InternalTransition(trigReload, do(coalesceReload), spawnInFlight).
		InternalTransition(trigFirstReady, do(announceReady)).
		InternalTransition(trigRestartOne, on(restartOne)).
		InternalTransition(trigReplaced, do(completeRestart)).
		InternalTransition(trigReplaceFailed, do(failRestart))

	sm.Configure(stateReloading).
		SubstateOf(stateLive)

	sm.Configure(stateExecPending).
		SubstateOf(stateReloading).
		OnEntry(execNewImage).
		Permit(trigExecFailed, stateRunning)

	sm.Configure(stateAwaitingReady).
		SubstateOf(stateReloading).
		OnEntryFrom(trigStart, resumeAndSpawnNext).
		OnEntry(spawnNextInPlace).
		Permit(trigGenerationReady, stateRunning).
		Permit(trigGenerationFailed, stateRunning).
		InternalTransition(trigReload, do(coalesceReload)).
		InternalTransition(trigRestartOne, on(refuseDuringReload)).
		InternalTransition(trigBatchReady, do(retireBatch)).
		InternalTransition(trigBatchDrained, do(startNextBatch))

	sm.Configure(stateExiting).
		OnEntryFrom(trigSoftStop, beginSoftStop).
		OnEntryFrom(trigTerminate, beginTerminate).
		OnEntryFrom(trigRunEnded, endRun).
		OnEntryFrom(trigDelayOver, endShutdownDelay).
		Permit(trigAllGone, stateExited).
		InternalTransition(trigTerminateAgain, on(forwardToAll)).
		InternalTransition(trigStopAgain, do(repeatSoftStop)).
		InternalTransition(trigReload, do(refuseReload)).
		InternalTransition(trigForward, on(forwardToCurrent)).
		InternalTransition(trigSpawned, on(stopLateWorker)).
		InternalTransition(trigSpawnFailed, on(dropSpawn)).
		InternalTransition(trigExited, on(workerExitedWhileExiting)).
		InternalTransition(trigOrphan, on(reapOrphan)).
		InternalTransition(trigNoChildren, do(noteNoChildren)).
		InternalTransition(trigKillDue, on(killStragglers)).
		InternalTransition(trigStatus, on(replyStatus)).
		InternalTransition(trigScale, on(refuseWhileStopping)).
		InternalTransition(trigRestartOne, on(refuseWhileStopping)).
		InternalTransition(trigBadRequest, on(refuseRequest)).
		InternalTransition(trigNoise, do(ignoreNoise))

	sm.Configure(stateExited).
		OnEntry(exitMaster)

	return sm
}

// Graph returns the transition table in Graphviz DOT, as stateless draws it.
func Graph() string { return table().ToGraph() }

// A reload waits while a spawn is in flight (the child it may create must
// be in the -sf list of the exec) and while one worker is being restarted.
func noSpawnInFlight(ctx context.Context, _ ...any) bool { return !machineOf(ctx).busy() }
func spawnInFlight(ctx context.Context, _ ...any) bool   { return machineOf(ctx).busy() }

func (m *Machine) busy() bool { return len(m.inflight) > 0 || m.repl != nil }

// A reload re-executes the master, or starts the new generation in place,
// as Config.Reexec and the last ImageChanged say.
func reloadExecs(ctx context.Context, _ ...any) bool   { return machineOf(ctx).execOnReload() }
func reloadInPlace(ctx context.Context, _ ...any) bool { return !machineOf(ctx).execOnReload() }

func (m *Machine) execOnReload() bool {
	switch m.cfg.Reexec {
	case ReexecAlways:
		return true
	case ReexecOnUpgrade:
		return m.upgrade
	}
	return false
}

func isFresh(ctx context.Context, _ ...any) bool   { return machineOf(ctx).cfg.Resume == nil }
func isResumed(ctx context.Context, _ ...any) bool { return machineOf(ctx).cfg.Resume != nil }

func ignoreEvent(ctx context.Context, s stateless.State, t stateless.Trigger, _ []string) error {
	m := machineOf(ctx)
	m.log(LevelDebug, "event ignored", "state", s.(state).String(), "event", m.ev.String())
	return nil
}

// ---- small helpers used by the callbacks ----

func (m *Machine) emit(a Action) {
	if m.out == nil {
		m.out = make([]Action, 0, 8) // most steps emit a few; one allocation
	}
	m.out = append(m.out, a)
}

// log emits a Log action. Its attrs are copied into a chunk the machine
// appends to and never rewrites, so that a log line costs no allocation of
// its own; each line's slice is capped, so appending to it copies.
func (m *Machine) log(level Level, msg string, attrs ...any) {
	if len(m.attrs)+len(attrs) > cap(m.attrs) {
		m.attrs = make([]any, 0, max(256, len(attrs)))
	}
	start := len(m.attrs)
	m.attrs = append(m.attrs, attrs...)
	m.emit(Log{Level: level, Msg: msg, Attrs: m.attrs[start:len(m.attrs):len(m.attrs)]})
}

func (m *Machine) setTimer(t Timer, after time.Duration) {
	m.armed[t] = true
	m.emit(SetTimer{Timer: t, After: after})
}

func (m *Machine) cancelTimer(t Timer) {
	if m.armed[t] {
		delete(m.armed, t)
		m.emit(CancelTimer{Timer: t})
	}
}

func (m *Machine) gen(n int) *generation {
	for _, g := range m.gens {
		if g.n == n {
			return g
		}
	}
	return nil
}

func (m *Machine) addGen(n int) *generation {
	if g := m.gen(n); g != nil {
		return g
	}
	g := &generation{n: n, slots: make([]*worker, m.size)}
	i := len(m.gens)
	for i > 0 && m.gens[i-1].n > n {
		i--
	}
	m.gens = slices.Insert(m.gens, i, g)
	return g
}

// dropGenIfEmpty forgets a generation with no live worker and no spawn in
// flight, unless it is the serving or the next one.
func (m *Machine) dropGenIfEmpty(g *generation) {
	if g.live > 0 || g.n == m.cur || g.n == m.next {
		return
	}
	for k := range m.inflight {
		if k[0] == g.n {
			return
		}
	}
	m.cancelTimer(Timer{Kind: TimerKill, Generation: g.n})
	m.gens = slices.DeleteFunc(m.gens, func(x *generation) bool { return x == g })
}

func (g *generation) put(w *worker) {
	for w.slot >= len(g.slots) {
		g.slots = append(g.slots, nil)
	}
	g.slots[w.slot] = w
	w.home = g
	g.live++
	if w.ready {
		g.ready++
	}
}

func (m *Machine) genReady(n int) bool {
	g := m.gen(n)
	return g != nil && g.ready >= m.size
}

// livePids lists live workers, oldest generation first, slot order, keeping
// those of the generations for which keep returns true; with keep nil,
// every live worker, those leaving on their own last.
func (m *Machine) livePids(keep func(*generation) bool) []int {
	var pids []int
	for _, g := range m.gens {
		if keep != nil && !keep(g) {
			continue
		}
		for _, w := range g.slots {
			if w != nil {
				pids = append(pids, w.pid)
			}
		}
	}
	if keep == nil {
		for _, w := range m.leaving {
			pids = append(pids, w.pid)
		}
	}
	return pids
}

// stopWorker tells one worker to stop on its own, while its generation
// goes on: it leaves its slot (which may be filled again at once) for
// Machine.leaving, gets sig, and SIGKILL after StopTimeout (TimerKillWorker).
func (m *Machine) stopWorker(w *worker, sig Signal) {
	g := w.home
	if g.slots[w.slot] == w {
		g.slots[w.slot] = nil
		g.live--
		if w.ready {
			g.ready--
		}
	}
	w.leaving = true
	m.leaving = append(m.leaving, w)
	m.cancelTimer(Timer{Kind: TimerStable, Pid: w.pid})
	m.cancelTimer(Timer{Kind: TimerReadyAfter, Pid: w.pid})
	m.cancelTimer(Timer{Kind: TimerQuick, Pid: w.pid})
	m.cancelTimer(Timer{Kind: TimerWatchdog, Pid: w.pid})
	if !w.replacing { // else told to stop already, by the watchdog: its deadline stands
		m.kill([]int{w.pid}, sig)
		m.setTimer(Timer{Kind: TimerKillWorker, Pid: w.pid}, m.cfg.StopTimeout)
	}
	m.dropGenIfEmpty(g)
}

func (m *Machine) kill(pids []int, sig Signal) {
	if len(m.gone) > 0 {
		pids = slices.DeleteFunc(slices.Clone(pids), func(p int) bool { return slices.Contains(m.gone, p) })
	}
	if len(pids) > 0 {
		m.emit(Kill{Pids: pids, Signal: sig})
	}
}

func (m *Machine) isCurrent(g *generation) bool { return g.n == m.cur && !g.retired }

func (m *Machine) startWorker(gen, slot int) {
	m.inflight[[2]int{gen, slot}] = true
	m.emit(Spawn{Generation: gen, Slot: slot})
}

// replyAll answers the reload requests waiting for o, the outcome of the
// reload that covered them (nil if none began).
func (m *Machine) replyAll(ok bool, msg string, o *ReloadOutcome) {
	for _, id := range m.requests {
		m.emit(Reply{ID: id, OK: ok, Error: msg, Reload: o.clone()})
	}
	m.requests = nil
}

func (m *Machine) controlID() (RequestID, bool) {
	if c, ok := m.ev.(ControlRequest); ok && !m.derived {
		return c.ID, true
	}
	return 0, false
}

// retire tells a whole generation to stop with sig and arms its kill timer.
func (m *Machine) retire(g *generation, sig Signal) {
	g.retired = true
	m.unwatchGen(g)
	m.kill(m.livePids(func(x *generation) bool { return x == g }), sig)
	if g.live > 0 {
		m.setTimer(Timer{Kind: TimerKill, Generation: g.n}, m.cfg.StopTimeout)
	}
	if g.n == m.cur {
		m.cancelRestarts()
	}
	m.dropGenIfEmpty(g)
}

// retireBounded retires gens with the stop signal, as a reload's outcome
// does, but keeps to MaxOldGenerations: if more generations would then be
// draining, the oldest of them get SIGKILL at once instead (and no stop
// signal, when this retires them). Draining are the retired generations
// with a live worker not sent SIGKILL already: a killed one is only
// waiting to be reaped. A killed generation adopted after a re-exec counts
// as draining again (the handover says stopping, not killed), but it is
// always older than those that are, so it only gets a second SIGKILL.
func (m *Machine) retireBounded(gens []*generation) {
	doomed := m.overCap(gens)
	for _, g := range gens {
		if !slices.Contains(doomed, g) {
			m.retire(g, m.cfg.StopSignal)
		}
	}
	for _, g := range doomed {
		m.killGeneration(g)
	}
}

// overCap lists the generations beyond MaxOldGenerations, oldest first, once
// retiring are retired too.
func (m *Machine) overCap(retiring []*generation) []*generation {
	limit := m.cfg.MaxOldGenerations
	if limit == 0 {
		return nil
	}
	var draining []*generation
	for _, g := range m.gens {
		if g.live > 0 && !g.killed && (g.retired || slices.Contains(retiring, g)) {
			draining = append(draining, g)
		}
	}
	if n := len(draining) - max(limit, 0); n > 0 {
		return draining[:n]
	}
	return nil
}

// killGeneration sends SIGKILL to every worker of g, retiring it if it was
// not. Its kill timer has nothing left to do: the workers will be reaped.
func (m *Machine) killGeneration(g *generation) {
	g.retired, g.killed = true, true
	m.unwatchGen(g)
	pids := m.livePids(func(x *generation) bool { return x == g })
	m.log(LevelWarn, "too many old generations draining: killing the oldest", "generation", g.n, "pids", pids,
		"max-old-generations", max(m.cfg.MaxOldGenerations, 0))
	m.kill(pids, SIGKILL)
	m.cancelTimer(Timer{Kind: TimerKill, Generation: g.n})
}

func (m *Machine) cancelRestarts() {
	for slot := range m.size {
		if m.restarting[slot] {
			delete(m.restarting, slot)
			m.cancelTimer(Timer{Kind: TimerRestart, Generation: m.cur, Slot: slot})
		}
	}
	m.closeRestartWindows()
}

// Status is what a status request would answer now: the state, the
// serving generation, the reload counts and every live worker. It is a
// pull accessor (as raft's Status): a caller may read it between events,
// for metrics or a health check, without a request through Step. The
// result belongs to the caller.
func (m *Machine) Status() *Status { return m.status() }

// Reloads returns the counts of reloads that succeeded and failed: what
// Status says of them, without building the list of workers.
func (m *Machine) Reloads() (succeeded, failed int) { return m.reloads, m.failedReload }

// ReloadSeqs says how many reloads have begun since the master's first
// start and the Seq of the last that ended (ReloadOutcome.Seq; 0 if none
// has). Cheap: a caller that times reloads compares them after each Step.
func (m *Machine) ReloadSeqs() (begun, ended int) {
	if m.last != nil {
		ended = m.last.Seq
	}
	return m.begun, ended
}

func (m *Machine) status() *Status {
	s := &Status{State: m.State(), Generation: m.cur, Size: m.size, Reloads: m.reloads, FailedReloads: m.failedReload, ShutdownDelay: m.delaying}
	for _, g := range m.gens {
		for _, w := range g.slots {
			if w != nil {
				s.Workers = append(s.Workers, WorkerStatus{
					Pid: w.pid, Generation: w.gen, Slot: w.slot,
					Current: m.isCurrent(g), Ready: w.ready, Stopping: g.retired || w.replacing,
				})
			}
		}
	}
	for _, w := range m.leaving {
		s.Workers = append(s.Workers, WorkerStatus{Pid: w.pid, Generation: w.gen, Slot: w.slot, Ready: w.ready, Stopping: true})
	}
	m.addReloadStatus(s)
	return s
}

func (m *Machine) handover() Handover {
	h := Handover{
		Generation: m.cur, MaxGeneration: m.maxGen,
		Reloads: m.reloads, FailedReloads: m.failedReload,
		Announced: m.announced,
		Requests:  slices.Clone(m.requests),
		Failures:  slices.Clone(m.failures),
		StopPids:  slices.Clone(m.stopPids),
		TermPids:  slices.Clone(m.termPids),

		LimitCounts: slices.Clone(m.limitCounts),
		Size:        m.size,

		ReloadsBegun:  m.begun,
		ReloadTrigger: m.trigger,
		LastReload:    m.last.clone(),
		Restarts:      slices.Clone(m.restarts),
		Backoffs:      slices.Clone(m.backoffs),
	}
	for _, g := range m.gens {
		for _, w := range g.slots {
			if w != nil {
				hw := HandoverWorker{Pid: w.pid, Generation: w.gen, Slot: w.slot, Ready: w.ready, Stopping: g.retired, Replacing: w.replacing}
				if g.n != w.gen {
					hw.Home = g.n
				}
				h.Workers = append(h.Workers, hw)
			}
		}
	}
	for _, w := range m.leaving {
		h.Workers = append(h.Workers, HandoverWorker{Pid: w.pid, Generation: w.gen, Slot: w.slot, Ready: w.ready, Stopping: true, Leaving: true})
	}
	for t := range m.armed {
		h.Timers = append(h.Timers, t)
	}
	slices.SortFunc(h.Timers, compareTimers)
	return h
}

func compareTimers(a, b Timer) int {
	switch {
	case a.Kind != b.Kind:
		return int(a.Kind) - int(b.Kind)
	case a.Generation != b.Generation:
		return a.Generation - b.Generation
	case a.Slot != b.Slot:
		return a.Slot - b.Slot
	}
	return a.Pid - b.Pid
}
