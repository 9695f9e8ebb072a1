package fsm

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// MaxWorkers is the largest generation the machine accepts.
const MaxWorkers = 1024

// Config is everything the machine needs to know before its first event.
type Config struct {
	// Workers is the number of workers per generation (1..MaxWorkers).
	Workers int
	// Path is the absolute path the master re-executes on reload.
	Path string
	// Argv is the master's command line as started (argv[0] included). Exec
	// reuses it with earlier -sf/-st lists removed and -sf <live pids> added.
	Argv []string

	// Ready says when a new worker counts as ready. The zero value is
	// ReadyImmediate, which no reload can roll back once the workers have
	// started; the command line's default is DefaultReady.
	Ready ReadyMode
	// ReadyTimeout bounds the wait for a new generation during a reload.
	ReadyTimeout time.Duration
	// StopSignal is the graceful stop signal (old workers, soft stop).
	StopSignal Signal
	// StopTimeout is how long a stopping worker has before SIGKILL.
	StopTimeout time.Duration
	// Reexec says when a reload re-executes the master (ReexecAlways, the
	// zero value) or starts the new generation in place.
	Reexec ReexecPolicy
	// Restart says what to do when a current worker exits on its own.
	Restart RestartPolicy
	// Backoff tunes restart delays; the zero value means the defaults
	// (100 ms doubling to 30 s, reset after 60 s up).
	Backoff Backoff

	// StopPids (-sf) and TermPids (-st) are processes to signal once the
	// first generation of this machine is ready: StopPids get StopSignal,
	// TermPids get SIGTERM. Pids that Resume knows as workers are adopted
	// as the old generation instead.
	StopPids, TermPids []int

	// Resume is the state handed over by the image that exec'd this one;
	// nil on a fresh start.
	Resume *Handover

	// Seed seeds the jitter of restart delays: each delay is drawn in
	// [d/2, d) of the backoff's schedule d by a PRNG the machine keeps, so
	// that workers that fail together do not restart in lockstep, and a
	// given seed and events give the same delays. The zero value means no
	// jitter (every delay is d); the command line draws a seed at each start.
	Seed uint64
	// RestartLimit ends the run when one slot fails too often; the zero
	// value means no limit.
	RestartLimit RestartLimit
	// MaxOldGenerations caps the generations that drain at once: retired
	// ones (old, or rolled back) with live workers not yet sent SIGKILL.
	// When a reload's outcome (promote or rollback) would leave more, the
	// oldest of them get SIGKILL at once instead of at StopTimeout. 0, the
	// zero value, sets no cap; NoOldGenerations lets none drain: the old
	// generation gets SIGKILL instead of StopSignal once the new one is
	// ready. The command line's default is DefaultMaxOldGenerations.
	MaxOldGenerations int
	// Batch makes a reload rolling: the new generation starts Batch slots
	// at a time; once a batch is ready, the old workers of its slots are
	// told to stop, and the next batch starts once they are gone, so that
	// a reload never runs more than size+Batch workers. 0, the zero value,
	// starts the whole generation at once (as does a Batch of the size or
	// more). docs/design.md ("Rolling reloads") says what a failure in a
	// batch keeps and rolls back.
	Batch int
	// Watchdog is --watchdog: a worker that has sent WATCHDOG=1 once
	// (WorkerWatchdog) and then sends none for this long is stopped and
	// replaced as --restart says. 0, the zero value, watches no worker.
	Watchdog time.Duration
	// ShutdownDelay is --shutdown-delay: a stop (SoftStop, Terminate, a
	// stop request) first keeps serving this long (TimerShutdownDelay),
	// then tells the workers; a second stop meanwhile is carried out at
	// once. 0, the zero value, tells them at once.
	ShutdownDelay time.Duration
	// SuccessExit is --success-exit: an exit status of the master (a
	// worker's: its code, or 128+N when signal N killed it) that is one of
	// these becomes 0, as systemd's SuccessExitStatus= and tini -e do.
	SuccessExit []int
}

// NoOldGenerations is the MaxOldGenerations that lets no generation drain
// (--max-old-generations 0).
const NoOldGenerations = -1

// DefaultMaxOldGenerations is the MaxOldGenerations of "mworker run"
// without --max-old-generations: docs/guide.md ("Bounded drains") says why.
const DefaultMaxOldGenerations = 4

// ReadyMode is how a worker becomes ready.
type ReadyMode struct {
	// Kind is ReadyImmediate, ReadyNotify or ReadyAfter.
	Kind ReadyKind
	// After is the uptime that makes a worker ready (ReadyAfter).
	After time.Duration
}

// DefaultReady is the readiness of "mworker run" without --ready: a worker
// is ready once it has stayed up one second. A new generation whose
// workers start and then die on a bad configuration is rolled back
// instead of replacing the serving one, at the cost of that second in
// every reload and start. One second is supervisord's startsecs and three
// times the 0.3 s a server that reads its configuration after starting
// took to exit in issue 12.
var DefaultReady = ReadyMode{Kind: ReadyAfter, After: time.Second}

// ReadyKind is the kind of readiness.
type ReadyKind int

// The readiness kinds of --ready.
const (
	ReadyImmediate ReadyKind = iota // ready as soon as it is started
	ReadyNotify                     // ready when it sends READY=1 (WorkerReady)
	ReadyAfter                      // ready once it has stayed up ReadyMode.After
)

func (r ReadyMode) String() string {
	switch r.Kind {
	case ReadyImmediate:
		return "immediate"
	case ReadyNotify:
		return "notify"
	case ReadyAfter:
		return r.After.String()
	}
	return "ready(" + itoa(int(r.Kind)) + ")"
}

// ParseReadyMode parses --ready: "immediate", "notify" or a duration.
func ParseReadyMode(s string) (ReadyMode, error) {
	switch s {
	case "immediate":
		return ReadyMode{Kind: ReadyImmediate}, nil
	case "notify":
		return ReadyMode{Kind: ReadyNotify}, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return ReadyMode{}, fmt.Errorf("fsm: bad --ready %q: use immediate, notify or a positive duration such as 2s", s)
	}
	return ReadyMode{Kind: ReadyAfter, After: d}, nil
}

// ReexecPolicy says when a reload re-executes the master's image.
//
// A re-exec is how a new mworker binary takes over, but it has a cost
// that no caller can remove: between execve and the new image's
// signal.Notify (3 ms on an idle machine, 8–12 ms on a loaded one) a
// SIGTERM, SIGINT or SIGHUP kills the master, and one that the old image
// caught just before execve is gone with it. A reload that starts the new
// generation in place has no such window.
type ReexecPolicy int

// The policies of --reexec.
const (
	// ReexecAlways re-executes on every reload (HAProxy's master does).
	ReexecAlways ReexecPolicy = iota
	// ReexecOnUpgrade re-executes only when the caller reported, with
	// ImageChanged, that the binary at Path is not the running image; an
	// ordinary reload starts the new generation in place.
	ReexecOnUpgrade
	// ReexecNever starts every new generation in place: a new binary at
	// Path takes over only at the master's next start.
	ReexecNever
)

func (r ReexecPolicy) String() string {
	switch r {
	case ReexecAlways:
		return "always"
	case ReexecOnUpgrade:
		return "upgrade"
	case ReexecNever:
		return "never"
	}
	return "reexec(" + itoa(int(r)) + ")"
}

// ParseReexecPolicy parses --reexec.
func ParseReexecPolicy(s string) (ReexecPolicy, error) {
	switch s {
	case "always":
		return ReexecAlways, nil
	case "upgrade":
		return ReexecOnUpgrade, nil
	case "never":
		return ReexecNever, nil
	}
	return 0, fmt.Errorf("fsm: unknown --reexec %q: use upgrade, always or never", s)
}

// RestartPolicy is what happens when a current worker exits on its own.
type RestartPolicy int

// The restart policies of --restart.
const (
	RestartAlways    RestartPolicy = iota // restart whatever the status
	RestartOnFailure                      // restart unless it exited 0
	RestartNo                             // never restart: the exit ends the run
)

func (r RestartPolicy) String() string {
	switch r {
	case RestartAlways:
		return "always"
	case RestartOnFailure:
		return "on-failure"
	case RestartNo:
		return "no"
	}
	return "restart(" + itoa(int(r)) + ")"
}

// ParseRestartPolicy parses --restart.
func ParseRestartPolicy(s string) (RestartPolicy, error) {
	switch s {
	case "always":
		return RestartAlways, nil
	case "on-failure":
		return RestartOnFailure, nil
	case "no":
		return RestartNo, nil
	}
	return 0, fmt.Errorf("fsm: unknown --restart %q: use always, on-failure or no", s)
}

// Backoff is the restart delay schedule: Min, doubled after each quick
// failure up to Max, back to Min once a worker has stayed up Reset.
type Backoff struct {
	Min, Max, Reset time.Duration
}

// DefaultBackoff is the schedule of docs/design.md, section "Restarts".
var DefaultBackoff = Backoff{Min: 100 * time.Millisecond, Max: 30 * time.Second, Reset: 60 * time.Second}

// ParseBackoff parses --backoff: "MIN..MAX", such as 100ms..30s. The reset
// uptime stays DefaultBackoff's.
func ParseBackoff(s string) (Backoff, error) {
	lo, hi, ok := strings.Cut(s, "..")
	dmin, err1 := time.ParseDuration(lo)
	dmax, err2 := time.ParseDuration(hi)
	switch {
	case !ok || err1 != nil || err2 != nil:
		return Backoff{}, fmt.Errorf("fsm: bad --backoff %q: use MIN..MAX, two durations such as 100ms..30s", s)
	case dmin <= 0:
		return Backoff{}, fmt.Errorf("fsm: bad --backoff %q: MIN must be positive; use e.g. 100ms..%s", s, hi)
	case dmax < dmin:
		return Backoff{}, fmt.Errorf("fsm: bad --backoff %q: MIN %s is longer than MAX %s; write the shorter first, e.g. %s..%s", s, dmin, dmax, dmax, dmin)
	}
	return Backoff{Min: dmin, Max: dmax, Reset: DefaultBackoff.Reset}, nil
}

func (b Backoff) String() string { return b.Min.String() + ".." + b.Max.String() }

func (b Backoff) delay(failures int) time.Duration {
	d := b.Min
	for i := 0; i < failures && d < b.Max; i++ {
		d *= 2
	}
	return min(d, b.Max)
}

// jitter draws the delay of a restart in [d/2, d), "equal jitter": half the
// schedule is kept, so that a crash loop still backs off (full jitter,
// [0, d), would restart some workers at once however often they failed)
// and MAX stays the longest wait; the other half spreads workers that
// failed together. The draw is one of 1000 steps of the half's width, so
// that the logs say after=2.73s rather than after=2.730512877s. Without a
// seed, d itself.
func (m *Machine) jitter(d time.Duration) time.Duration {
	if m.cfg.Seed == 0 || d <= 1 {
		return d
	}
	half := d / 2
	step := max((d-half)/1000, 1)
	return half + time.Duration(splitmix64(&m.rng)%uint64((d-half)/step))*step
}

// splitmix64 advances the state *s and returns the next number of
// Vigna's SplitMix64 sequence: a tiny pure PRNG, so that the core stays
// deterministic given Config.Seed.
func splitmix64(s *uint64) uint64 {
	*s += 0x9e3779b97f4a7c15
	z := *s
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// RestartLimit is --restart-limit N/WINDOW: a slot whose workers fail
// Count times within Window of the first of those failures, none of them
// staying up Backoff.Reset in between, ends the run as --restart no does,
// with the status of the last failure. The window is fixed from the first
// failure, as systemd's StartLimitIntervalSec= is. Count 0 means no limit.
type RestartLimit struct {
	Count  int
	Window time.Duration
}

func (r RestartLimit) String() string {
	if r.Count == 0 {
		return "off"
	}
	return itoa(r.Count) + "/" + r.Window.String()
}

// ParseRestartLimit parses --restart-limit: "N/WINDOW" such as 5/60s, or "off".
func ParseRestartLimit(s string) (RestartLimit, error) {
	if s == "off" {
		return RestartLimit{}, nil
	}
	n, w, ok := strings.Cut(s, "/")
	count, err1 := strconv.Atoi(n)
	window, err2 := time.ParseDuration(w)
	if !ok || err1 != nil || err2 != nil || count < 1 || window <= 0 {
		return RestartLimit{}, fmt.Errorf("fsm: bad --restart-limit %q: use N/WINDOW, a count of 1 or more and a positive duration, such as 5/60s, or off", s)
	}
	return RestartLimit{Count: count, Window: window}, nil
}

// QuickDeath is the uptime under which a restarted worker's death counts
// as quick: QuickDeaths of them in a row in one slot earn one warning.
const (
	QuickDeath  = time.Second
	QuickDeaths = 3
)

// ErrConfig is wrapped by every error New returns.
var ErrConfig = errors.New("fsm: bad config")

func errBadSignal(name string) error {
	return fmt.Errorf("fsm: unknown signal %q: use a name such as TERM, SIGUSR1 or a number 1..64", name)
}

func (c *Config) validate() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrConfig}, a...)...)
	}
	switch {
	case c.Workers < 1 || c.Workers > MaxWorkers:
		return bad("workers %d out of range: use 1..%d", c.Workers, MaxWorkers)
	case c.Ready.Kind == ReadyAfter && c.Ready.After <= 0:
		return bad("ready duration %v must be positive", c.Ready.After)
	case c.Ready.Kind < ReadyImmediate || c.Ready.Kind > ReadyAfter:
		return bad("unknown ready kind %d", c.Ready.Kind)
	case c.ReadyTimeout <= 0:
		return bad("ready timeout %v must be positive", c.ReadyTimeout)
	case c.StopTimeout <= 0:
		return bad("stop timeout %v must be positive", c.StopTimeout)
	case c.StopSignal <= 0 || c.StopSignal > 64:
		return bad("stop signal %d out of range 1..64", int(c.StopSignal))
	case c.Restart < RestartAlways || c.Restart > RestartNo:
		return bad("unknown restart policy %d", c.Restart)
	case c.Reexec < ReexecAlways || c.Reexec > ReexecNever:
		return bad("unknown reexec policy %d", c.Reexec)
	case c.Watchdog < 0:
		return bad("watchdog %v is negative: use 0 for none or a positive duration such as 30s", c.Watchdog)
	case c.ShutdownDelay < 0:
		return bad("shutdown delay %v is negative: use 0 for none or a positive duration such as 5s", c.ShutdownDelay)
	case c.MaxOldGenerations < NoOldGenerations:
		return bad("max old generations %d: use 0 for no cap, NoOldGenerations, or a positive number", c.MaxOldGenerations)
	case c.Batch < 0 || c.Batch > MaxWorkers:
		return bad("batch %d out of range: use 0 (the whole generation at once) or 1..%d", c.Batch, MaxWorkers)
	}
	for _, n := range c.SuccessExit {
		if n < 0 || n > 255 {
			return bad("success exit status %d out of range: use 0..255", n)
		}
	}
	for _, p := range append(append([]int(nil), c.StopPids...), c.TermPids...) {
		if p <= 0 {
			return bad("pid %d in -sf/-st is not a process id: use positive pids", p)
		}
	}
	if c.Backoff == (Backoff{}) {
		c.Backoff = DefaultBackoff
	}
	if c.Backoff.Min <= 0 || c.Backoff.Max < c.Backoff.Min || c.Backoff.Reset <= 0 {
		return bad("backoff %+v: need 0 < Min <= Max and Reset > 0", c.Backoff)
	}
	if c.RestartLimit != (RestartLimit{}) && (c.RestartLimit.Count < 1 || c.RestartLimit.Window <= 0) {
		return bad("restart limit %+v: need Count >= 1 and Window > 0, or the zero value for none", c.RestartLimit)
	}
	return nil
}

// Handover is the state one master image passes to the next across Exec.
// The caller encodes it (it is plain data) into the new image's environment
// and gives it back as Config.Resume.
type Handover struct {
	// Generation is the generation that was serving; the new image rolls
	// back to it if its own generation fails.
	Generation int
	// MaxGeneration is the highest generation number used so far.
	MaxGeneration int
	// Reloads and FailedReloads count finished reloads.
	Reloads, FailedReloads int
	// Announced is true once READY=1 has been sent to the service manager.
	Announced bool
	// ExitStatus is the status of the last current worker reaped before
	// the exec, which the master exits with after a stop if no current
	// worker is reaped during it.
	ExitStatus int
	// Workers are the live workers, current and old.
	Workers []HandoverWorker
	// Timers are the armed timers; the caller keeps their deadlines and
	// re-arms them in the new image before feeding Start.
	Timers []Timer
	// Requests are reload requests waiting for the outcome of this reload.
	Requests []RequestID
	// Failures is the restart failure count per slot of the serving generation.
	Failures []int
	// StopPids and TermPids are foreign -sf/-st pids not yet signalled.
	StopPids, TermPids []int
	// LimitCounts is the --restart-limit failure count per slot of the
	// serving generation, within its open window.
	LimitCounts []int
	// Size is the desired number of workers (scale); 0 means Config.Workers.
	Size int
	// ReloadsBegun counts the reloads begun since the first start, this
	// one included; ReloadTrigger names what asked for this one
	// (ReloadOutcome.Trigger); LastReload is how the last one before it
	// ended, nil if none has.
	ReloadsBegun  int
	ReloadTrigger string
	LastReload    *ReloadOutcome
	// Restarts counts the restarts of each slot since the first start;
	// Backoffs is the delay of each slot's last restart, 0 once reset.
	Restarts []int
	Backoffs []time.Duration
}

// HandoverWorker is one live worker in a Handover.
type HandoverWorker struct {
	Pid, Generation, Slot int
	Ready, Stopping       bool
	// Leaving: stopping on its own (scaled down), not with its generation.
	Leaving bool
	// Home is the generation whose slots it fills, when not Generation
	// (restart SLOT moved it into the serving one); 0 means Generation.
	Home int
	// Replacing: stopped by the watchdog, in its slot until it is reaped;
	// its exit counts as a failure.
	Replacing bool
}

// Status is the machine's answer to a status request; the caller adds what
// only it knows (the master's pid, uptimes).
type Status struct {
	State         string // "running", "reloading" or "exiting"
	Generation    int    // the serving generation
	Size          int    // the desired number of workers (-n, then scale)
	Reloads       int
	FailedReloads int
	Workers       []WorkerStatus
	// ShutdownDelay: a stop has begun and waits for Config.ShutdownDelay
	// before telling the workers, who serve on meanwhile.
	ShutdownDelay bool

	// LastReload is how the last reload ended; nil before one has.
	LastReload *ReloadOutcome
	// ReloadTrigger names what asked for the reload under way ("" when
	// none is): see ReloadOutcome.Trigger.
	ReloadTrigger string
	// ReloadQueued: a reload was asked for during a reload, a spawn or a
	// restart SLOT, and starts once that is over.
	ReloadQueued bool
	// Slots are the serving generation's slots 0..Size-1: restarts and
	// backoff.
	Slots []SlotStatus
}

// The results of a reload (ReloadOutcome.Result).
const (
	ReloadSuccess = "success" // the new generation serves
	ReloadFailure = "failure" // rolled back, or the re-exec failed: the previous generation serves on
	ReloadAborted = "aborted" // a stop began before the new generation was ready
)

// ReloadOutcome is how a reload ended, as far as the machine knows: the
// caller, which has the clock, adds when and how long it took.
type ReloadOutcome struct {
	// Seq is the reload's number: the Seq-th reload begun since the
	// master's first start (re-execs keep the count).
	Seq int
	// Result is ReloadSuccess, ReloadFailure or ReloadAborted.
	Result string
	// Reason says why it failed or was aborted; "" on success.
	Reason string
	// Trigger names what asked for it: a signal ("SIGUSR2", "SIGHUP") or
	// a control request (ControlRequest.From, or "control request").
	Trigger string
	// Generation is the generation it started (0 when a re-exec failed
	// before starting one); Previous the one serving when it began, which
	// serves again after a failure.
	Generation, Previous int
	// Pids are Generation's workers once it was ready (success); Old the
	// workers of earlier generations then told to stop.
	Pids, Old []int
}

func (o *ReloadOutcome) String() string {
	s := "reload#" + strconv.Itoa(o.Seq) + " " + o.Result + " gen=" + strconv.Itoa(o.Generation) + " previous=" + strconv.Itoa(o.Previous) + " trigger=" + strconv.Quote(o.Trigger)
	if len(o.Pids) > 0 {
		s += " pids=" + pidList(o.Pids)
	}
	if len(o.Old) > 0 {
		s += " old=" + pidList(o.Old)
	}
	return s
}

func (o *ReloadOutcome) clone() *ReloadOutcome {
	if o == nil {
		return nil
	}
	c := *o
	c.Pids, c.Old = slices.Clone(o.Pids), slices.Clone(o.Old)
	return &c
}

// SlotStatus is one slot of the serving generation in a Status.
type SlotStatus struct {
	Slot int
	// Restarts counts the restarts of this slot (after its worker exited
	// or failed to start) since the master's first start.
	Restarts int
	// Failures counts its failures in a row: they set the backoff, and a
	// worker that stays up Backoff.Reset clears them.
	Failures int
	// Backoff is the delay of its last restart (jitter included), 0 once
	// the failures are cleared; RestartPending: that restart is still due.
	Backoff        time.Duration
	RestartPending bool
}

// WorkerStatus is one live worker in a Status.
type WorkerStatus struct {
	Pid, Generation, Slot int
	Current, Ready        bool
	Stopping              bool
}

func (s *Status) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "state=%s gen=%d size=%d reloads=%d failed=%d ", s.State, s.Generation, s.Size, s.Reloads, s.FailedReloads)
	if s.ReloadQueued {
		b.WriteString("queued ")
	}
	if s.ShutdownDelay {
		b.WriteString("shutdown-delay ")
	}
	if o := s.LastReload; o != nil {
		b.WriteString("last=" + o.Result + "#" + strconv.Itoa(o.Seq) + " ")
	}
	b.WriteString("workers=[")
	for i, w := range s.Workers {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(strconv.Itoa(w.Pid))
		b.WriteByte(':')
		b.WriteString(strconv.Itoa(w.Generation))
		b.WriteByte('/')
		b.WriteString(strconv.Itoa(w.Slot))
		if w.Current {
			b.WriteString(",current")
		}
		if w.Ready {
			b.WriteString(",ready")
		}
		if w.Stopping {
			b.WriteString(",stopping")
		}
	}
	b.WriteByte(']')
	return b.String()
}
