package proptest

import (
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/mworker/mworker/fsm"
)

// phase is the reference model's idea of the machine's state.
type phase int

const (
	phIdle phase = iota
	phRunning
	phAwaiting    // the new image waits for its generation
	phExecPending // Exec emitted, outcome not reported yet
	phExiting
	phExited
)

// String gives the name fsm.Machine.State reports for the phase.
func (p phase) String() string {
	return [...]string{"idle", "running", "reloading", "reloading", "exiting", "exited"}[p]
}

// child is a live worker as the model knows it.
// mrepl is a restart SLOT in progress: the replacement is generation gen's
// worker of slot; the request waits.
type mrepl struct {
	slot, gen int
	id        fsm.RequestID
	failure   bool
}

type child struct {
	gen, slot int
	home      int // the generation whose slots it fills: gen, until restart SLOT moves it into the serving one
	ready     bool
	leaving   bool // told to stop on its own (scaled down); its generation goes on
	replacing bool // stopped by the watchdog; it keeps its slot until reaped (watchdog_test.go)
}

// model is the dumb reference: plain sets and counters, updated from events
// by the rules of docs/design.md, with no transition table. It survives a
// successful exec (the world does: children, timers and requests carry over)
// while the Machine under test is replaced.
type model struct {
	cfg fsm.Config // config of the machine being driven

	phase             phase
	cur, next, maxGen int
	size              int    // desired workers: Config.Workers, then scale
	repl              *mrepl // the restart SLOT in progress
	// The shutdown delay (--shutdown-delay): the first stop is held while
	// delaying; heldSig is the terminate signal it carries, 0 for a soft stop.
	delaying bool
	heldSig  fsm.Signal
	// A rolling reload (--batch): slots below rollDone are the new
	// generation's, their old workers told to stop (rollWait: the last
	// batch's); rollDone..rollEnd-1 are the batch under way.
	roll              bool
	rollDone, rollEnd int
	rollWait          []int
	workers           map[int]*child // live children the machine was told about
	retired           map[int]bool   // generations told to stop as a whole
	killed            map[int]bool   // retired generations sent SIGKILL for MaxOldGenerations
	spawns            map[[2]int]bool
	armed             map[fsm.Timer]bool // the timers the machine must have armed, by the model's own rules
	stale             []fsm.Timer        // timers once armed, then cancelled or fired
	failures          []int
	limitCounts       []int // --restart-limit failures per slot in its open window

	open          map[fsm.RequestID]bool // control requests sent and not answered
	requests      []fsm.RequestID        // reload requests waiting for this reload
	queued        []fsm.RequestID        // reload requests for the next reload
	pendingReload bool

	announced              bool
	upgrade                bool // the last ImageChanged said the binary changed
	reloads, failedReloads int
	failure                bool
	culprit                *fsm.ExitStatus
	exitStatus             int
	exitFixed              bool
	stopReaped             bool
	stopSignal             fsm.Signal

	foreignStop, foreignTerm []int // -sf/-st pids not signalled yet
	signalled                map[int]bool
	dead                     map[int]bool // reaped children
	lost                     map[int]bool // declared dead by NoChildren in this step
	reaping                  bool         // stepping the exits NoChildren implies
	deferred                 []fsm.Event  // events the machine holds while the exec is pending
	seen                     map[int]bool // children alive at some point of this step
	nextPid                  int

	// The quick-death streaks (fsm.QuickDeath): deaths in a row per slot
	// of workers whose quick timer was armed, and whether this image has
	// warned about them; a new image starts afresh.
	quick       []int
	quickWarned bool
}

func newModel(cfg fsm.Config) *model {
	return &model{
		cfg:         cfg,
		size:        cfg.Workers,
		workers:     map[int]*child{},
		retired:     map[int]bool{},
		killed:      map[int]bool{},
		spawns:      map[[2]int]bool{},
		armed:       map[fsm.Timer]bool{},
		failures:    make([]int, cfg.Workers),
		limitCounts: make([]int, cfg.Workers),
		open:        map[fsm.RequestID]bool{},
		stopSignal:  cfg.StopSignal,
		foreignStop: slices.Clone(cfg.StopPids),
		foreignTerm: slices.Clone(cfg.TermPids),
		signalled:   map[int]bool{},
		dead:        map[int]bool{},
		nextPid:     1000,
	}
}

type sigPid struct {
	sig fsm.Signal
	pid int
}

// expectation is what the model predicts for one step.
type expectation struct {
	noise      bool // only Log actions
	spawns     [][2]int
	kills      []sigPid
	signalPids []sigPid
	replies    map[fsm.RequestID]bool // id -> OK
	status     map[fsm.RequestID]*fsm.Status
	notifies   []fsm.NotifyState
	exec       bool
	exit       bool
	exitStatus int
	timers     []fsm.SetTimer // every timer armed, of every kind
	cancels    []fsm.Timer    // every armed timer disarmed
	merged     bool           // held events were replayed within the step
	promoted   bool
	rolledBack bool
	stopped    bool // the step began the stop of everything
	suspends   int  // job-control signals forwarded: the master stops after each
	silent     bool // held by the machine: no action at all, not even a log
}

// merge adds the expectation of an event the machine replays within the
// same step (events held while the exec was pending).
func (x *expectation) merge(y *expectation) {
	x.noise = x.noise && y.noise
	x.spawns = append(x.spawns, y.spawns...)
	x.suspends += y.suspends
	x.kills = append(x.kills, y.kills...)
	x.signalPids = append(x.signalPids, y.signalPids...)
	for id, ok := range y.replies {
		x.reply(id, ok)
	}
	for id, st := range y.status {
		if x.status == nil {
			x.status = map[fsm.RequestID]*fsm.Status{}
		}
		x.status[id] = st
	}
	x.notifies = append(x.notifies, y.notifies...)
	x.exec = x.exec || y.exec
	if y.exit {
		x.exit, x.exitStatus = true, y.exitStatus
	}
	x.timers = append(x.timers, y.timers...)
	x.cancels = append(x.cancels, y.cancels...)
	x.merged = true
	x.promoted = x.promoted || y.promoted
	x.rolledBack = x.rolledBack || y.rolledBack
	x.stopped = x.stopped || y.stopped
}

// step is event as the machine's Step sees it: while the exec is pending
// every event but ExecFailed is held, and replayed after ExecFailed.
func (m *model) step(ev fsm.Event) *expectation {
	m.seen = map[int]bool{}
	for pid := range m.workers {
		m.seen[pid] = true
	}
	if _, ok := ev.(fsm.ExecFailed); m.phase == phExecPending && !ok {
		m.deferred = append(m.deferred, ev)
		return &expectation{noise: true, silent: true}
	}
	x := m.event(ev)
	if m.phase != phExecPending && m.phase != phExited && len(m.deferred) > 0 {
		held := m.deferred
		m.deferred = nil
		lost := m.lost
		defer func() { m.lost = lost }() // the order of kills and NoChildren is lost in a merged step
		for _, e := range held {
			if _, ok := e.(fsm.ExecFailed); m.phase == phExecPending && !ok {
				m.deferred = append(m.deferred, e)
				continue
			}
			x.merge(m.event(e))
		}
	}
	return x
}

func (x *expectation) reply(id fsm.RequestID, ok bool) {
	if x.replies == nil {
		x.replies = map[fsm.RequestID]bool{}
	}
	x.replies[id] = ok
}

func (x *expectation) kill(pids []int, sig fsm.Signal) {
	for _, p := range pids {
		x.kills = append(x.kills, sigPid{sig, p})
	}
}

// ---- queries ----

func (m *model) isCurrent(gen int) bool { return gen == m.cur && !m.retired[gen] }

// serving: a worker of the serving generation that was not told to stop
// on its own.
func (m *model) serving(c *child) bool { return m.isCurrent(c.home) && !c.leaving }

func (m *model) pids(keep func(*child) bool) []int {
	var out []int
	for pid, c := range m.workers {
		if keep == nil || keep(c) {
			out = append(out, pid)
		}
	}
	sort.Ints(out)
	return out
}

// genPids lists the workers of gen that stop or serve with it (not those
// leaving on their own).
func (m *model) genPids(gen int) []int {
	return m.pids(func(c *child) bool { return c.home == gen && !c.leaving })
}

func (m *model) genReady(gen int) bool {
	n := 0
	for _, c := range m.workers {
		if c.home == gen && c.ready && !c.leaving {
			n++
		}
	}
	return n >= m.size
}

func (m *model) restartArmed() bool {
	for t := range m.armed {
		if t.Kind == fsm.TimerRestart && t.Generation == m.cur {
			return true
		}
	}
	return false
}

func (m *model) spawning(gen int) bool {
	for k := range m.spawns {
		if k[0] == gen {
			return true
		}
	}
	return false
}

func (m *model) slotTaken(gen, slot int) bool {
	for _, c := range m.workers {
		if c.home == gen && c.slot == slot && !c.leaving {
			return true
		}
	}
	return m.spawns[[2]int{gen, slot}]
}

// status is what a status request must answer now, less what the model
// does not follow (unmodelled).
func (m *model) status() *fsm.Status {
	s := &fsm.Status{State: m.phase.String(), Generation: m.cur, Size: m.size, Reloads: m.reloads, FailedReloads: m.failedReloads,
		ReloadQueued: m.pendingReload || len(m.queued) > 0, ShutdownDelay: m.delaying}
	for _, pid := range m.pids(nil) {
		c := m.workers[pid]
		s.Workers = append(s.Workers, fsm.WorkerStatus{
			Pid: pid, Generation: c.gen, Slot: c.slot,
			Current: m.serving(c), Ready: c.ready, Stopping: m.retired[c.home] || c.leaving || c.replacing,
		})
	}
	return s
}

// ---- the rules ----

// signalRoute is the signal table of docs/design.md ("Signals sent to the
// master"), written again from the text:
// reload, soft stop, terminate, and forward for the rest, except SIGCHLD
// (the reaper's), signals that cannot be caught, SIGPIPE that concerns the
// master itself, SIGURG and 33 (the Go runtime's), and numbers that are no
// signal at all. The fault signals sent with kill(2) are forwarded.
func signalRoute(s fsm.Signal) fsm.Route {
	switch s {
	case fsm.SIGHUP, fsm.SIGUSR2:
		return fsm.RouteReload
	case fsm.SIGUSR1:
		return fsm.RouteSoftStop
	case fsm.SIGTERM, fsm.SIGINT:
		return fsm.RouteTerminate
	case fsm.SIGCHLD, fsm.SIGKILL, fsm.SIGSTOP, fsm.SIGURG, fsm.SIGPIPE, 33:
		return fsm.RouteIgnore
	}
	if s < 1 || s > 64 {
		return fsm.RouteIgnore
	}
	return fsm.RouteForward
}

// event applies ev to the model and returns what the machine must do.
func (m *model) event(ev fsm.Event) *expectation {
	x := &expectation{}
	m.lost = nil
	if m.phase == phExited {
		x.noise = true
		return x
	}
	switch e := ev.(type) {
	case fsm.Start:
		if m.phase != phIdle {
			x.noise = true
			break
		}
		if m.cfg.Resume == nil {
			m.phase, m.cur, m.maxGen = phRunning, 1, 1
			for slot := range m.size {
				m.spawn(x, 1, slot)
			}
		} else {
			m.resume(x)
		}
	case fsm.SignalReceived:
		switch signalRoute(e.Signal) {
		case fsm.RouteReload:
			m.reload(x, 0, false)
		case fsm.RouteSoftStop:
			m.softStop(x, 0, false)
		case fsm.RouteTerminate:
			m.terminate(x, e.Signal)
		case fsm.RouteForward:
			x.kill(m.pids(m.serving), e.Signal)
			if e.Signal == fsm.SIGTSTP || e.Signal == fsm.SIGTTIN || e.Signal == fsm.SIGTTOU {
				// Then the master stops itself, as a shell job does.
				x.suspends++
			}
		default:
			x.noise = true
		}
	case fsm.ControlRequest:
		m.open[e.ID] = true
		// scale and restart take an argument, the others none: a request
		// that gets this wrong is refused whatever the phase.
		if takesArg := e.Command == fsm.CmdScale || e.Command == fsm.CmdRestart; takesArg != (e.Arg != "") {
			x.reply(e.ID, false)
			break
		}
		switch e.Command {
		case fsm.CmdReload:
			m.reload(x, e.ID, true)
		case fsm.CmdStop:
			m.softStop(x, e.ID, true)
		case fsm.CmdStatus:
			x.reply(e.ID, true)
			x.status = map[fsm.RequestID]*fsm.Status{e.ID: m.status()}
		case fsm.CmdScale:
			m.scale(x, e)
		case fsm.CmdRestart:
			m.restartOne(x, e)
		default:
			x.reply(e.ID, false)
		}
	case fsm.WorkerStarted:
		m.started(x, e)
	case fsm.SpawnFailed:
		key := [2]int{e.Generation, e.Slot}
		if !m.spawns[key] {
			x.noise = true
			break
		}
		delete(m.spawns, key)
		switch {
		case m.phase == phExiting:
			m.dropIfEmpty(x, e.Generation)
		case m.repl != nil && e.Generation == m.repl.gen:
			m.repl.failure = true
			m.dropIfEmpty(x, e.Generation)
		case e.Slot >= m.size && !m.retired[e.Generation]:
			// Its slot was scaled away meanwhile: nothing to restart.
			m.dropIfEmpty(x, e.Generation)
		case m.phase == phAwaiting && e.Generation == m.next:
			m.failure = true
		case m.isCurrent(e.Generation):
			m.quickDeath(e.Slot)
			m.afterCurrentExit(x, e.Slot, e.Status)
		default:
			m.dropIfEmpty(x, e.Generation)
		}
	case fsm.WorkerReady:
		m.ready(x, e.Pid)
	case fsm.WorkerWatchdog:
		m.watchdog(x, e)
	case fsm.ChildExited:
		m.exited(x, e)
	case fsm.NoChildren:
		// ECHILD is the kernel's word: every child the machine still knows
		// is dead and its exit was lost. Each counts as an exit with status
		// 255, oldest generation first, slot order, with its consequences.
		lost := m.pids(nil)
		// (Those leaving on their own come last: they fill no slot.)
		slices.SortFunc(lost, func(a, b int) int {
			ca, cb := m.workers[a], m.workers[b]
			switch {
			case ca.leaving != cb.leaving:
				if ca.leaving {
					return 1
				}
				return -1
			case ca.leaving:
				return a - b
			case ca.home != cb.home:
				return ca.home - cb.home
			}
			return ca.slot - cb.slot
		})
		m.lost = map[int]bool{}
		for _, pid := range lost {
			m.lost[pid] = true
		}
		// Until all are counted, none of them may be signalled, and a
		// queued reload waits (its -sf list would name the dead).
		m.reaping = true
		for _, pid := range lost {
			if m.phase == phExecPending || m.phase == phExited {
				break // the machine holds the rest; the Exec check flags it
			}
			m.exited(x, fsm.ChildExited{Pid: pid, Status: fsm.ExitStatus{Code: 255}})
			m.settle(x)
		}
		m.reaping = false
		x.kills = slices.DeleteFunc(x.kills, func(k sigPid) bool { return m.lost[k.pid] })
		x.noise = len(lost) == 0
	case fsm.ExecFailed:
		if m.phase != phExecPending {
			x.noise = true
			break
		}
		m.phase = phRunning
		m.failedReloads++
		if m.announced {
			x.notifies = append(x.notifies, fsm.NotifyReady)
		}
		m.answer(x, false)
	case fsm.TimerFired:
		m.timer(x, e.Timer)
	case fsm.ImageChanged:
		m.upgrade = e.Changed
		x.noise = true
	}
	m.settle(x)
	return x
}

func (m *model) spawn(x *expectation, gen, slot int) {
	m.spawns[[2]int{gen, slot}] = true
	x.spawns = append(x.spawns, [2]int{gen, slot})
}

func (m *model) resume(x *expectation) {
	h := m.cfg.Resume
	m.phase = phAwaiting
	m.cur = h.Generation
	m.maxGen = max(m.maxGen, h.MaxGeneration)
	m.maxGen++
	m.next = m.maxGen
	m.queued, m.pendingReload = nil, false
	// The handover says which workers are stopping, not which were sent
	// SIGKILL: the new image counts those as draining again.
	m.killed = map[int]bool{}
	// The armed timers carry over (the handover lists them); the quick
	// streaks do not.
	m.quick, m.quickWarned = nil, false
	m.spawnNext(x)
}

func (m *model) reload(x *expectation, id fsm.RequestID, ctl bool) {
	if m.delaying {
		// Refused during the shutdown delay: mworker is stopping.
		if ctl {
			x.reply(id, false)
		} else {
			x.noise = true
		}
		return
	}
	switch m.phase {
	case phRunning:
		if len(m.spawns) > 0 || m.repl != nil {
			m.pendingReload = true
			if ctl {
				m.queued = append(m.queued, id)
			}
			return
		}
		if ctl {
			m.requests = append(m.requests, id)
		}
		m.startReload(x)
	case phAwaiting:
		m.pendingReload = true
		if ctl {
			m.queued = append(m.queued, id)
		}
	case phExiting:
		if ctl {
			x.reply(id, false)
		} else {
			x.noise = true
		}
	}
}

// startReload re-executes the master, or starts the next generation in
// place, as --reexec and the last ImageChanged say.
func (m *model) startReload(x *expectation) {
	execs := m.cfg.Reexec == fsm.ReexecAlways || (m.cfg.Reexec == fsm.ReexecOnUpgrade && m.upgrade)
	if execs {
		m.exec(x)
		return
	}
	m.requests = append(m.requests, m.queued...)
	m.queued, m.pendingReload = nil, false
	if m.announced {
		x.notifies = append(x.notifies, fsm.NotifyReloading)
	}
	m.phase = phAwaiting
	m.maxGen++
	m.next = m.maxGen
	m.spawnNext(x)
}

func (m *model) exec(x *expectation) {
	m.requests = append(m.requests, m.queued...)
	m.queued, m.pendingReload = nil, false
	if m.announced {
		x.notifies = append(x.notifies, fsm.NotifyReloading)
	}
	m.phase = phExecPending
	x.exec = true
}

func (m *model) softStop(x *expectation, id fsm.RequestID, ctl bool) {
	switch m.phase {
	case phRunning, phAwaiting:
		if m.beginDelay(x, 0) {
			if ctl {
				x.reply(id, true) // the stop has begun
			}
			return
		}
		m.enterExiting(x, m.cfg.StopSignal, m.pids(func(c *child) bool { return !m.retired[c.home] && !c.leaving }))
		if ctl {
			x.reply(id, true)
		}
	case phExiting:
		if ctl {
			x.reply(id, true)
		} else {
			x.kill(m.pids(nil), m.cfg.StopSignal)
		}
	}
}

func (m *model) terminate(x *expectation, sig fsm.Signal) {
	switch m.phase {
	case phRunning, phAwaiting:
		if m.beginDelay(x, sig) {
			return
		}
		m.enterExiting(x, sig, m.pids(nil))
	case phExiting:
		x.kill(m.pids(nil), sig)
	}
}

func (m *model) enterExiting(x *expectation, sig fsm.Signal, pids []int) {
	m.stopSignal = sig
	delayed := m.delaying
	if delayed {
		// The delay ends with the stop (cut short, or over: then the
		// timer has fired and is no longer armed).
		m.delaying = false
		m.cancelTimer(x, fsm.Timer{Kind: fsm.TimerShutdownDelay})
	}
	if m.repl != nil {
		m.abortRestart(x, false) // the stop tells its replacement
	}
	if m.next != 0 {
		m.cancelTimer(x, fsm.Timer{Kind: fsm.TimerReadyTimeout, Generation: m.next})
	}
	m.cancelRestarts(x)
	m.unwatch(x, m.pids(nil))
	m.next, m.failure = 0, false
	m.endRoll()
	m.requests = append(m.requests, m.queued...)
	m.queued, m.pendingReload = nil, false
	m.answer(x, false)
	if !delayed {
		x.notifies = append(x.notifies, fsm.NotifyStopping) // else sent as the delay began
	}
	x.kill(pids, sig)
	x.stopped = true
	m.phase = phExiting
	m.stopReaped = false
	// The last resort: whatever still lives when the stop timeout passes
	// gets SIGKILL.
	if len(m.workers) > 0 || len(m.spawns) > 0 {
		m.setTimer(x, fsm.Timer{Kind: fsm.TimerKillAll}, m.cfg.StopTimeout)
	}
}

func (m *model) answer(x *expectation, ok bool) {
	for _, id := range m.requests {
		x.reply(id, ok)
	}
	m.requests = nil
}

func (m *model) started(x *expectation, e fsm.WorkerStarted) {
	key := [2]int{e.Generation, e.Slot}
	if !m.spawns[key] || e.Pid <= 0 || m.workers[e.Pid] != nil {
		x.noise = true
		return
	}
	delete(m.spawns, key)
	occupied := m.slotTaken(e.Generation, e.Slot)
	c := &child{gen: e.Generation, slot: e.Slot, home: e.Generation}
	m.workers[e.Pid] = c
	m.seen[e.Pid] = true
	switch {
	case m.phase == phExiting:
		x.kill([]int{e.Pid}, m.stopSignal)
	case m.killed[e.Generation]:
		x.kill([]int{e.Pid}, fsm.SIGKILL)
	case m.retired[e.Generation]:
		x.kill([]int{e.Pid}, m.cfg.StopSignal)
		// Its generation may have had no live worker when it was retired,
		// and so no kill timer yet.
		if kt := (fsm.Timer{Kind: fsm.TimerKill, Generation: e.Generation}); !m.armed[kt] {
			m.setTimer(x, kt, m.cfg.StopTimeout)
		}
	case e.Slot >= m.size || occupied:
		// Its slot was scaled away while it was being spawned, or filled
		// meanwhile: it leaves at once.
		m.leave(x, e.Pid)
	default:
		c.ready = m.cfg.Ready.Kind == fsm.ReadyImmediate
		if m.cfg.Ready.Kind == fsm.ReadyAfter {
			m.setTimer(x, fsm.Timer{Kind: fsm.TimerReadyAfter, Pid: e.Pid}, m.cfg.Ready.After)
		}
		// A restarted worker of a slot that has failed: its backoff resets
		// once it stays up, and its first second tells a quick death
		// (unless this image has warned about those already).
		if e.Generation == m.cur && m.failures[e.Slot] > 0 {
			m.setTimer(x, fsm.Timer{Kind: fsm.TimerStable, Pid: e.Pid}, m.backoff().Reset)
			if !m.quickWarned {
				m.setTimer(x, fsm.Timer{Kind: fsm.TimerQuick, Pid: e.Pid}, fsm.QuickDeath)
			}
		}
	}
}

func (m *model) ready(x *expectation, pid int) {
	c := m.workers[pid]
	if c == nil || c.ready || c.leaving || c.replacing || m.retired[c.home] || m.phase == phExiting {
		x.noise = true
		return
	}
	c.ready = true
	m.cancelTimer(x, fsm.Timer{Kind: fsm.TimerReadyAfter, Pid: pid})
}

func (m *model) exited(x *expectation, e fsm.ChildExited) {
	c := m.workers[e.Pid]
	if c == nil {
		x.noise = true
		return
	}
	delete(m.workers, e.Pid)
	m.dead[e.Pid] = true
	quick := m.armed[fsm.Timer{Kind: fsm.TimerQuick, Pid: e.Pid}]
	for _, k := range []fsm.TimerKind{fsm.TimerStable, fsm.TimerReadyAfter, fsm.TimerQuick, fsm.TimerWatchdog, fsm.TimerKillWorker} {
		m.cancelTimer(x, fsm.Timer{Kind: k, Pid: e.Pid})
	}
	st := m.judged(c, e.Status)
	switch {
	case c.leaving:
		// It was told to stop on its own: its deadline went with it.
	case m.phase == phExiting:
		// docs/design.md: after a stop, the first failure of a current
		// worker reaped since the stop began, else 0.
		if m.isCurrent(c.home) {
			ok := m.exitStatus == 0 || slices.Contains(m.cfg.SuccessExit, m.exitStatus)
			if !m.exitFixed && (!m.stopReaped || ok) {
				m.exitStatus = shellStatus(st)
			}
			m.stopReaped = true
		}
		m.dropIfEmpty(x, c.home)
	case m.repl != nil && c.home == m.repl.gen:
		// The replacement of a restart SLOT died before it was ready.
		m.repl.failure = true
		m.dropIfEmpty(x, c.home)
	case m.phase == phAwaiting && c.home == m.next:
		m.failure = true
	case !m.isCurrent(c.home):
		m.dropIfEmpty(x, c.home)
	default:
		if quick {
			m.quickDeath(c.slot)
		}
		m.afterCurrentExit(x, c.slot, st)
	}
}

// dropIfEmpty: a generation that is neither serving nor next and has no
// worker left nor coming needs no kill timer any more.
func (m *model) dropIfEmpty(x *expectation, gen int) {
	if gen != m.cur && gen != m.next && len(m.genPids(gen)) == 0 && !m.spawning(gen) {
		m.cancelTimer(x, fsm.Timer{Kind: fsm.TimerKill, Generation: gen})
	}
}

// quickDeath counts a death of slot's worker within its first second (or a
// failed spawn); fsm.QuickDeaths in a row warn, once per image and
// generation, after which no quick timer is armed.
func (m *model) quickDeath(slot int) {
	for slot >= len(m.quick) {
		m.quick = append(m.quick, 0)
	}
	m.quick[slot]++
	if m.quick[slot] >= fsm.QuickDeaths {
		m.quickWarned = true
	}
}

// shellStatus is the child status of docs/design.md ("Exit status of the
// master"): the exit code, or 128 + the signal that killed it.
func shellStatus(st fsm.ExitStatus) int {
	if st.Signal != 0 {
		return 128 + int(st.Signal)
	}
	return st.Code
}

func (m *model) afterCurrentExit(x *expectation, slot int, st fsm.ExitStatus) {
	m.exitStatus = shellStatus(st)
	switch m.cfg.Restart {
	case fsm.RestartNo:
		m.culprit = &st
		return
	case fsm.RestartOnFailure:
		if shellStatus(st) == 0 {
			if m.phase == phRunning && len(m.genPids(m.cur)) == 0 && !m.restartArmed() && !m.spawning(m.cur) {
				m.culprit = &st
			}
			return
		}
	}
	// --restart-limit: the failure that reaches the count ends the run as
	// --restart no does; the first opens the slot's window (a timer).
	if lim := m.cfg.RestartLimit; lim.Count > 0 {
		m.limitCounts[slot]++
		if m.limitCounts[slot] >= lim.Count {
			m.closeWindow(x, slot)
			stats.limits.Add(1)
			m.culprit = &st
			return
		}
		if m.limitCounts[slot] == 1 {
			m.setTimer(x, fsm.Timer{Kind: fsm.TimerRestartWindow, Generation: m.cur, Slot: slot}, lim.Window)
		}
	}
	b := m.backoff()
	d := b.Min
	for i := 0; i < m.failures[slot] && d < b.Max; i++ {
		d *= 2
	}
	d = min(d, b.Max)
	if m.failures[slot] < 64 {
		m.failures[slot]++
	}
	// With a seed the machine draws the delay in [d/2, d); the harness
	// accepts any delay in that range (sameTimers).
	m.setTimer(x, fsm.Timer{Kind: fsm.TimerRestart, Generation: m.cur, Slot: slot}, d)
}

// backoff is the restart schedule: a zero Config.Backoff means the default.
func (m *model) backoff() fsm.Backoff {
	if m.cfg.Backoff == (fsm.Backoff{}) {
		return fsm.DefaultBackoff
	}
	return m.cfg.Backoff
}

func (m *model) setTimer(x *expectation, t fsm.Timer, d time.Duration) {
	m.armed[t] = true
	x.timers = append(x.timers, fsm.SetTimer{Timer: t, After: d})
}

// cancelTimer disarms t if it is armed: the machine cancels only those.
func (m *model) cancelTimer(x *expectation, t fsm.Timer) {
	if m.armed[t] {
		delete(m.armed, t)
		m.stale = append(m.stale, t)
		x.cancels = append(x.cancels, t)
	}
}

// closeWindow forgets slot's --restart-limit failures and their window.
func (m *model) closeWindow(x *expectation, slot int) {
	if m.limitCounts[slot] == 0 {
		return
	}
	m.limitCounts[slot] = 0
	m.cancelTimer(x, fsm.Timer{Kind: fsm.TimerRestartWindow, Generation: m.cur, Slot: slot})
}

// cancelRestarts forgets the serving generation's restart timers, as the
// machine does when it promotes a generation or stops.
func (m *model) cancelRestarts(x *expectation) {
	for slot := range m.size {
		m.cancelTimer(x, fsm.Timer{Kind: fsm.TimerRestart, Generation: m.cur, Slot: slot})
	}
	for slot := range m.limitCounts {
		m.closeWindow(x, slot)
	}
}

func (m *model) timer(x *expectation, t fsm.Timer) {
	if !m.armed[t] {
		x.noise = true
		return
	}
	delete(m.armed, t)
	m.stale = append(m.stale, t)
	switch t.Kind {
	case fsm.TimerRestart:
		replaced := m.next != 0 && t.Slot < m.rollDone // a rolling reload's new generation serves it
		if m.phase != phExiting && t.Generation == m.cur && t.Slot < m.size && !replaced && !m.slotTaken(m.cur, t.Slot) {
			m.spawn(x, m.cur, t.Slot)
		}
	case fsm.TimerStable:
		if c := m.workers[t.Pid]; m.phase != phExiting && c != nil && c.home == m.cur && !c.leaving {
			m.failures[c.slot] = 0
			m.closeWindow(x, c.slot)
		}
	case fsm.TimerQuick:
		// The worker outlived its first second: its slot's streak is over.
		if c := m.workers[t.Pid]; m.phase != phExiting && c != nil && c.home == m.cur && !c.leaving && c.slot < len(m.quick) {
			m.quick[c.slot] = 0
		}
	case fsm.TimerRestartWindow:
		// The window passed: the slot's failures no longer count.
		if m.phase != phExiting && t.Generation == m.cur {
			m.limitCounts[t.Slot] = 0
		}
	case fsm.TimerReadyAfter:
		m.ready(x, t.Pid)
	case fsm.TimerReadyTimeout:
		if m.repl != nil && t.Generation == m.repl.gen {
			m.abortRestart(x, true)
		} else if m.phase == phAwaiting && t.Generation == m.next {
			m.failure = true
		}
	case fsm.TimerKill:
		if m.retired[t.Generation] {
			x.kill(m.genPids(t.Generation), fsm.SIGKILL)
		}
	case fsm.TimerKillAll:
		x.kill(m.pids(nil), fsm.SIGKILL)
	case fsm.TimerShutdownDelay:
		// The delay is over: the held stop is carried out as it would
		// have been at once.
		if m.delaying {
			if m.heldSig != 0 {
				m.enterExiting(x, m.heldSig, m.pids(nil))
			} else {
				m.enterExiting(x, m.cfg.StopSignal, m.pids(func(c *child) bool { return !m.retired[c.home] && !c.leaving }))
			}
		}
	case fsm.TimerKillWorker:
		// Armed only while the worker lives and leaves, or is replaced.
		x.kill([]int{t.Pid}, fsm.SIGKILL)
	case fsm.TimerWatchdog:
		if m.watched(t.Pid) != nil {
			m.replace(x, t.Pid)
		}
	}
}

// settle applies the consequences of the data, as the machine's settle does.
func (m *model) settle(x *expectation) {
	for {
		switch {
		case m.phase == phAwaiting && m.failure:
			m.rollBack(x)
		case m.phase == phAwaiting && m.genReady(m.next):
			m.promote(x)
		case m.phase == phAwaiting && m.roll && m.batchReady():
			m.retireBatch(x)
		case m.phase == phAwaiting && m.roll && m.batchDrained():
			m.spawnBatch(x)
		case m.phase == phRunning && m.culprit == nil && m.cfg.Restart == fsm.RestartOnFailure && m.repl == nil &&
			len(m.genPids(m.cur)) == 0 && !m.restartArmed() && !m.spawning(m.cur):
			// Nothing serves and nothing will (every serving worker exited
			// 0, the last spawn was of a slot scaled away): the run is over.
			m.culprit = &fsm.ExitStatus{}
		case (m.phase == phRunning || m.phase == phAwaiting) && m.culprit != nil:
			st := *m.culprit
			m.culprit = nil
			m.exitStatus, m.exitFixed = shellStatus(st), true
			m.enterExiting(x, m.cfg.StopSignal, m.pids(func(c *child) bool { return !m.retired[c.home] && !c.leaving }))
		case m.phase == phRunning && !m.announced && m.genReady(m.cur):
			m.announced = true
			m.signalForeign(x)
			m.notifyReady(x)
		case m.phase == phRunning && m.repl != nil && m.repl.failure:
			m.abortRestart(x, true)
		case m.phase == phRunning && m.repl != nil && m.replacementReady():
			m.completeRestart(x)
		case m.phase == phRunning && m.pendingReload && len(m.spawns) == 0 && m.repl == nil && !m.reaping && !m.delaying:
			m.startReload(x)
		case m.phase == phExiting && len(m.workers) == 0 && len(m.spawns) == 0:
			m.phase = phExited
			x.exit, x.exitStatus = true, m.exitStatus
			if slices.Contains(m.cfg.SuccessExit, m.exitStatus) {
				x.exitStatus = 0 // --success-exit
			}
		default:
			return
		}
	}
}

func (m *model) rollBack(x *expectation) {
	m.keepDoneBatches(x)
	m.endRoll()
	failed := m.next
	m.failure, m.next = false, 0
	m.cancelTimer(x, fsm.Timer{Kind: fsm.TimerReadyTimeout, Generation: failed})
	m.retireBounded(x, []int{failed})
	m.failedReloads++
	if m.cfg.Restart == fsm.RestartOnFailure && len(m.genPids(m.cur)) == 0 && !m.restartArmed() && !m.spawning(m.cur) {
		// Every serving worker exited 0 during the reload: nothing is
		// left to serve, as when they exit 0 while running.
		m.culprit = &fsm.ExitStatus{}
	}
	if m.announced {
		m.notifyReady(x)
	}
	m.answer(x, false)
	m.phase = phRunning
	x.rolledBack = true
}

func (m *model) promote(x *expectation) {
	ng := m.next
	m.cancelTimer(x, fsm.Timer{Kind: fsm.TimerReadyTimeout, Generation: ng})
	m.cancelRestarts(x)
	m.cur, m.next = ng, 0
	m.endRoll()
	var retiring []int
	for g := 1; g <= m.maxGen; g++ {
		if g != ng && !m.retired[g] {
			retiring = append(retiring, g)
		}
	}
	m.retireBounded(x, retiring)
	m.signalForeign(x)
	m.reloads++
	m.failures = make([]int, m.size)
	m.quick, m.quickWarned = nil, false
	m.announced = true
	m.notifyReady(x)
	m.answer(x, true)
	m.phase = phRunning
	x.promoted = true
}

// retireBounded retires gens, each told to stop with the stop signal,
// unless --max-old-generations says too many would then drain: draining
// are the retired generations with a live worker that were not sent
// SIGKILL, and the oldest of them beyond the cap get SIGKILL instead
// (once, and no stop signal if retired by this step).
func (m *model) retireBounded(x *expectation, gens []int) {
	var doomed []int
	if limit := m.cfg.MaxOldGenerations; limit != 0 {
		var draining []int
		for g := 1; g <= m.maxGen; g++ {
			if (m.retired[g] || slices.Contains(gens, g)) && !m.killed[g] && len(m.genPids(g)) > 0 {
				draining = append(draining, g)
			}
		}
		if n := len(draining) - max(limit, 0); n > 0 {
			doomed = draining[:n]
		}
	}
	for _, g := range gens {
		m.retired[g] = true
		m.unwatch(x, m.genPids(g))
		if !slices.Contains(doomed, g) {
			x.kill(m.genPids(g), m.cfg.StopSignal)
			// Told to stop: SIGKILL follows after the stop timeout.
			if len(m.genPids(g)) > 0 {
				m.setTimer(x, fsm.Timer{Kind: fsm.TimerKill, Generation: g}, m.cfg.StopTimeout)
			}
			m.dropIfEmpty(x, g)
		}
	}
	for _, g := range doomed {
		stats.capKills.Add(1)
		m.killed[g] = true
		x.kill(m.genPids(g), fsm.SIGKILL)
		// Killed already: its kill timer has nothing left to do.
		m.cancelTimer(x, fsm.Timer{Kind: fsm.TimerKill, Generation: g})
	}
}

func (m *model) signalForeign(x *expectation) {
	for _, p := range m.foreignStop {
		x.signalPids = append(x.signalPids, sigPid{m.cfg.StopSignal, p})
	}
	for _, p := range m.foreignTerm {
		x.signalPids = append(x.signalPids, sigPid{fsm.SIGTERM, p})
	}
	m.foreignStop, m.foreignTerm = nil, nil
}

func (x *expectation) String() string {
	return fmt.Sprintf("%+v", *x)
}

// scale is the rule of docs/design.md ("Scaling the pool"): N, +K or -K in
// 1..MaxWorkers, refused while stopping. Up: every missing slot of the
// serving generation (unless a restart is due for it) and of the one being
// readied starts. Down: the workers of the removed slots of both leave on
// their own, and the serving generation forgets those slots' restarts,
// backoffs, windows and streaks.
func (m *model) scale(x *expectation, e fsm.ControlRequest) {
	n, ok := scaleArg(e.Arg, m.size)
	if !ok || m.phase == phExiting {
		x.reply(e.ID, false)
		return
	}
	old := m.size
	m.size = n
	stats.scales.Add(1)
	if m.repl != nil && m.repl.slot >= n {
		m.abortRestart(x, true)
	}
	for len(m.failures) < n {
		m.failures = append(m.failures, 0)
	}
	for len(m.limitCounts) < n {
		m.limitCounts = append(m.limitCounts, 0)
	}
	for _, gen := range []int{m.cur, m.next} {
		if gen == 0 || m.retired[gen] {
			continue
		}
		if gen == m.next && m.roll {
			// The batches go on up to the new size.
			m.rollDone, m.rollEnd = min(m.rollDone, n), min(m.rollEnd, n)
			if n > old {
				continue
			}
		}
		if n > old {
			for slot := old; slot < n; slot++ {
				restart := fsm.Timer{Kind: fsm.TimerRestart, Generation: m.cur, Slot: slot}
				if !m.slotTaken(gen, slot) && !(gen == m.cur && m.armed[restart]) {
					m.spawn(x, gen, slot)
				}
			}
			continue
		}
		for _, pid := range m.pids(func(c *child) bool { return c.home == gen && !c.leaving && c.slot >= n }) {
			m.leave(x, pid)
		}
		if gen == m.cur {
			for slot := n; slot < old; slot++ {
				m.cancelTimer(x, fsm.Timer{Kind: fsm.TimerRestart, Generation: m.cur, Slot: slot})
				m.closeWindow(x, slot)
				m.failures[slot] = 0
				if slot < len(m.quick) {
					m.quick[slot] = 0
				}
			}
		}
	}
	x.reply(e.ID, true)
	x.status = map[fsm.RequestID]*fsm.Status{e.ID: m.status()}
	if m.phase == phRunning && m.cfg.Restart == fsm.RestartOnFailure && len(m.genPids(m.cur)) == 0 && !m.restartArmed() && !m.spawning(m.cur) {
		// The slots left exited 0 and are not restarted: the run is over.
		m.culprit = &fsm.ExitStatus{}
	}
}

// scaleArg reads N, +K or -K (decimal digits, one optional sign).
func scaleArg(arg string, size int) (int, bool) {
	if !scaleRE.MatchString(arg) {
		return 0, false
	}
	k, err := strconv.Atoi(strings.TrimLeft(arg, "+-"))
	if err != nil {
		return 0, false
	}
	n := k
	switch arg[0] {
	case '+':
		n = size + k
	case '-':
		n = size - k
	}
	return n, n >= 1 && n <= fsm.MaxWorkers
}

var scaleRE = regexp.MustCompile(`^[+-]?[0-9]+$`)

// leave tells one worker to stop on its own: the stop signal now, SIGKILL
// after the stop timeout, its own timers gone.
func (m *model) leave(x *expectation, pid int) {
	c := m.workers[pid]
	c.leaving = true
	for _, k := range []fsm.TimerKind{fsm.TimerStable, fsm.TimerReadyAfter, fsm.TimerQuick, fsm.TimerWatchdog} {
		m.cancelTimer(x, fsm.Timer{Kind: k, Pid: pid})
	}
	if c.replacing {
		return // told to stop by the watchdog already: its deadline stands
	}
	x.kill([]int{pid}, m.cfg.StopSignal)
	m.setTimer(x, fsm.Timer{Kind: fsm.TimerKillWorker, Pid: pid}, m.cfg.StopTimeout)
}

// restartOne is the rule of restart SLOT (docs/design.md): refused while a
// reload runs, while stopping, while another restart runs, for a slot out
// of range or one with no serving worker; otherwise the replacement is
// generation maxGen+1's worker of the slot, with the ready timeout.
func (m *model) restartOne(x *expectation, e fsm.ControlRequest) {
	slot, err := strconv.Atoi(e.Arg)
	ok := err == nil && e.Arg[0] != '+' && slot >= 0 && slot < m.size && m.phase == phRunning && m.repl == nil
	if ok {
		ok = len(m.pids(func(c *child) bool { return c.home == m.cur && c.slot == slot && !c.leaving })) == 1
	}
	if !ok {
		x.reply(e.ID, false)
		return
	}
	m.maxGen++
	m.repl = &mrepl{slot: slot, gen: m.maxGen, id: e.ID}
	m.setTimer(x, fsm.Timer{Kind: fsm.TimerReadyTimeout, Generation: m.maxGen}, m.cfg.ReadyTimeout)
	m.spawn(x, m.maxGen, slot)
}

// replacement is the worker of r's generation and slot, if it runs.
func (m *model) replacement(r *mrepl) (int, bool) {
	for pid, c := range m.workers {
		if c.home == r.gen && c.slot == r.slot && !c.leaving {
			return pid, true
		}
	}
	return 0, false
}

func (m *model) replacementReady() bool {
	pid, ok := m.replacement(m.repl)
	return ok && m.workers[pid].ready
}

// completeRestart: the replacement is ready; whatever serves the slot now
// leaves on its own, a restart due for the slot is cancelled, and the
// replacement fills the slot of the serving generation.
func (m *model) completeRestart(x *expectation) {
	r := m.repl
	m.repl = nil
	pid, _ := m.replacement(r)
	m.cancelTimer(x, fsm.Timer{Kind: fsm.TimerReadyTimeout, Generation: r.gen})
	for _, p := range m.pids(func(c *child) bool { return c.home == m.cur && c.slot == r.slot && !c.leaving }) {
		m.leave(x, p)
	}
	m.cancelTimer(x, fsm.Timer{Kind: fsm.TimerRestart, Generation: m.cur, Slot: r.slot})
	m.workers[pid].home = m.cur
	stats.restarted.Add(1)
	x.reply(r.id, true)
	if x.status == nil {
		x.status = map[fsm.RequestID]*fsm.Status{}
	}
	x.status[r.id] = m.status()
}

// abortRestart: the old worker keeps serving; the replacement, if it
// runs, leaves (unless a stop of everything tells it).
func (m *model) abortRestart(x *expectation, stopIt bool) {
	r := m.repl
	m.repl = nil
	m.cancelTimer(x, fsm.Timer{Kind: fsm.TimerReadyTimeout, Generation: r.gen})
	if pid, ok := m.replacement(r); ok && stopIt {
		m.leave(x, pid)
	}
	stats.restartFailed.Add(1)
	x.reply(r.id, false)
}

// ---- rolling reloads (--batch), docs/design.md "Rolling reloads" ----

func (m *model) endRoll() { m.roll, m.rollDone, m.rollEnd, m.rollWait = false, 0, 0, nil }

// spawnNext starts the next generation: every slot, or with --batch K
// below the size its first K slots.
func (m *model) spawnNext(x *expectation) {
	m.endRoll()
	if m.cfg.Batch > 0 && m.cfg.Batch < m.size {
		m.roll = true
		m.spawnBatch(x)
		return
	}
	m.setTimer(x, fsm.Timer{Kind: fsm.TimerReadyTimeout, Generation: m.next}, m.cfg.ReadyTimeout)
	for slot := range m.size {
		m.spawn(x, m.next, slot)
	}
}

// spawnBatch starts the next K slots, each batch with a ready timeout of
// its own.
func (m *model) spawnBatch(x *expectation) {
	from := m.rollEnd
	m.rollEnd = min(from+m.cfg.Batch, m.size)
	if from > 0 {
		m.cancelTimer(x, fsm.Timer{Kind: fsm.TimerReadyTimeout, Generation: m.next})
	}
	m.setTimer(x, fsm.Timer{Kind: fsm.TimerReadyTimeout, Generation: m.next}, m.cfg.ReadyTimeout)
	for slot := from; slot < m.rollEnd; slot++ {
		m.spawn(x, m.next, slot)
	}
}

// slotWorker is the worker filling slot of gen's slot table.
func (m *model) slotWorker(gen, slot int) (int, bool) {
	for pid, c := range m.workers {
		if c.home == gen && c.slot == slot && !c.leaving {
			return pid, true
		}
	}
	return 0, false
}

func (m *model) batchReady() bool {
	if m.rollDone >= m.rollEnd {
		return false
	}
	for slot := m.rollDone; slot < m.rollEnd && slot < m.size; slot++ {
		pid, ok := m.slotWorker(m.next, slot)
		if !ok || !m.workers[pid].ready {
			return false
		}
	}
	return true
}

func (m *model) batchDrained() bool {
	if m.rollDone != m.rollEnd || m.rollEnd >= m.size {
		return false
	}
	for _, pid := range m.rollWait {
		if m.workers[pid] != nil {
			return false
		}
	}
	return true
}

// retireBatch: the batch is ready; the old workers of its slots leave on
// their own and restarts due for those slots are cancelled.
func (m *model) retireBatch(x *expectation) {
	m.rollWait = nil
	for slot := m.rollDone; slot < m.rollEnd; slot++ {
		if pid, ok := m.slotWorker(m.cur, slot); ok {
			m.rollWait = append(m.rollWait, pid)
			m.leave(x, pid)
		}
		m.cancelTimer(x, fsm.Timer{Kind: fsm.TimerRestart, Generation: m.cur, Slot: slot})
	}
	m.rollDone = m.rollEnd
	stats.batches.Add(1)
}

// keepDoneBatches: a rolling reload failed; the workers of the batches
// that completed fill their slots of the serving generation's table (one
// that died leaves its slot to a new worker of the serving generation).
func (m *model) keepDoneBatches(x *expectation) {
	if !m.roll {
		return
	}
	if m.rollDone > 0 {
		stats.batchesKept.Add(1)
	}
	for slot := 0; slot < m.rollDone && slot < m.size; slot++ {
		if pid, ok := m.slotWorker(m.next, slot); ok {
			m.workers[pid].home = m.cur
			continue
		}
		restart := fsm.Timer{Kind: fsm.TimerRestart, Generation: m.cur, Slot: slot}
		if !m.slotTaken(m.cur, slot) && !m.armed[restart] {
			m.spawn(x, m.cur, slot)
		}
	}
}

// unmodelled clears what a status says that the model does not follow:
// the last reload's outcome and trigger, and the slots' restarts and
// backoff (fsm's golden and unit tests check those).
func unmodelled(s *fsm.Status) *fsm.Status {
	c := *s
	c.LastReload, c.ReloadTrigger, c.Slots = nil, "", nil
	return &c
}

// beginDelay holds the first stop for --shutdown-delay (docs/design.md,
// "Stop"): STOPPING now, the timer armed, workers and listeners untouched.
// It reports whether it did; a stop during the delay, or any stop without
// one, is carried out at once.
func (m *model) beginDelay(x *expectation, sig fsm.Signal) bool {
	if m.cfg.ShutdownDelay <= 0 || m.delaying {
		return false
	}
	m.delaying, m.heldSig = true, sig
	stats.delays.Add(1)
	x.notifies = append(x.notifies, fsm.NotifyStopping)
	m.setTimer(x, fsm.Timer{Kind: fsm.TimerShutdownDelay}, m.cfg.ShutdownDelay)
	return true
}

// notifyReady: READY=1, except while a stop waits out the shutdown delay
// (STOPPING=1 was said).
func (m *model) notifyReady(x *expectation) {
	if !m.delaying {
		x.notifies = append(x.notifies, fsm.NotifyReady)
	}
}
