package control

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"time"

	"github.com/mworker/mworker/fsm"
)

// Answer is the JSON object a client gets back.
type Answer struct {
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
	// Master and Workers are set in the answer to status.
	Master  *Master  `json:"master,omitempty"`
	Workers []Worker `json:"workers,omitzero"`
	// Reload is set in the answer to reload: how the reload that covered
	// the request ended (absent when none began: refused, or aborted
	// while still queued).
	Reload *Reload `json:"reload,omitempty"`
}

// Reload is how one reload ended, in the answer to reload and as a
// status's last_reload.
type Reload struct {
	// Result is "success", "failure" (rolled back, or the re-exec failed:
	// the previous generation serves on) or "aborted" (a stop began).
	Result string `json:"result"`
	// Reason says why it failed or was aborted; absent on success.
	Reason string `json:"reason,omitempty"`
	// Trigger is what asked for it: "SIGUSR2", "SIGHUP", "control client
	// pid N", or "re-exec" from a master that did not say.
	Trigger string `json:"trigger"`
	// Generation is the generation it started (0: a re-exec failed before
	// starting one); Previous the one serving when it began.
	Generation int `json:"generation"`
	Previous   int `json:"previous"`
	// Pids are Generation's workers once ready (success); OldPids those
	// of earlier generations then told to stop.
	Pids    []int `json:"pids,omitzero"`
	OldPids []int `json:"old_pids,omitzero"`
	// Seq numbers the reload since the master's first start.
	Seq int `json:"seq"`
	// Time is when it ended (RFC 3339, UTC); DurationSeconds how long it
	// took from its start (the reload signal or request acted on).
	Time            string  `json:"time,omitempty"`
	DurationSeconds float64 `json:"duration_seconds"`
}

// Socket is one listening socket the master passes to every worker.
type Socket struct {
	Name    string `json:"name"`    // LISTEN_FDNAMES
	Address string `json:"address"` // tcp://HOST:PORT or unix:///PATH (fd://N for another file)
	Fd      int    `json:"fd"`      // the worker's fd (3 for the first)
}

// Slot is one slot of the serving generation in a status answer.
type Slot struct {
	Slot int `json:"slot"`
	// Restarts counts the restarts of this slot (its worker exited or
	// failed to start) since the master's first start.
	Restarts int `json:"restarts"`
	// Failures counts its failures in a row, which set the backoff; a
	// worker that stays up long enough clears them.
	Failures int `json:"failures"`
	// BackoffSeconds is the delay of its last restart, 0 once cleared;
	// RestartPending: that restart has not happened yet.
	BackoffSeconds float64 `json:"backoff_seconds"`
	RestartPending bool    `json:"restart_pending"`
}

// Master is the master's line of a status answer.
type Master struct {
	Pid           int    `json:"pid"`
	State         string `json:"state"`
	Generation    int    `json:"generation"`
	Size          int    `json:"size"` // the desired number of workers (-n, then scale); 0 from an older master
	Reloads       int    `json:"reloads"`
	FailedReloads int    `json:"failed_reloads"`
	// DroppedLogLines counts the log lines the master dropped, since its
	// first start, because its stderr was not being read.
	DroppedLogLines int64 `json:"dropped_log_lines"`
	// DroppedWorkerLines counts the workers' lines the master dropped,
	// since its first start, because its stdout or stderr was not being
	// read (--worker-output prefix or json; always 0 with inherit).
	DroppedWorkerLines int64 `json:"dropped_worker_lines"`
	// Goroutines is how many goroutines the master runs: one per notify
	// socket, one per control client, a few of its own. A count that
	// grows without workers or clients to match is a leak (bench/soak.sh
	// watches it).
	Goroutines int `json:"goroutines"`

	// Version is the mworker version of the image running now (an
	// upgrade's re-exec changes it).
	Version string `json:"version"`
	// StartTime is when the master first started (RFC 3339, UTC; re-execs
	// keep it); UptimeSeconds how long ago.
	StartTime     string  `json:"start_time"`
	UptimeSeconds float64 `json:"uptime_seconds"`
	// Listeners are the sockets every worker gets, fd 3 first.
	Listeners []Socket `json:"listeners"`
	// Reloading is the trigger of the reload under way, absent when none
	// is; ReloadQueued says a reload asked for meanwhile will follow.
	Reloading    string `json:"reloading,omitempty"`
	ReloadQueued bool   `json:"reload_queued"`
	// LastReload is how the last reload ended; absent before the first.
	LastReload *Reload `json:"last_reload,omitempty"`
	// Slots are the serving generation's slots: restarts and backoff.
	Slots []Slot `json:"slots"`
}

// Worker is one live worker in a status answer.
type Worker struct {
	Pid        int  `json:"pid"`
	Generation int  `json:"generation"`
	Slot       int  `json:"slot"`
	Current    bool `json:"current"`
	// Role is "current" (the serving generation), "new" (starting during
	// a reload) or "old" (an earlier generation, stopping or rolled over).
	Role          string  `json:"role"`
	Ready         bool    `json:"ready"`
	Stopping      bool    `json:"stopping"`
	UptimeSeconds float64 `json:"uptime_seconds"`
	// StatusText is the worker's last STATUS= on its notify socket
	// (--ready notify or --watchdog); absent when it sent none.
	StatusText string `json:"status_text,omitempty"`
}

// Facts are what only the event loop knows about a status answer.
type Facts struct {
	// MasterPid is the master's pid.
	MasterPid int
	// Uptime is how long each worker, by pid, has been running; a pid
	// missing here shows 0.
	Uptime map[int]time.Duration
	// DroppedLogLines counts the log lines the master dropped because its
	// stderr was not being read.
	DroppedLogLines int64
	// DroppedWorkerLines counts the workers' lines dropped likewise.
	DroppedWorkerLines int64
	// Goroutines is runtime.NumGoroutine() of the master.
	Goroutines int

	Version      string
	StartTime    time.Time     // the master's first start
	MasterUptime time.Duration // since then
	Listeners    []Socket
	// StatusText is each worker's last STATUS=, by pid.
	StatusText map[int]string
	// LastReloadTime and LastReloadDuration are when the last reload
	// ended and how long it took; ReloadDuration how long the reload a
	// reload answer is about took.
	LastReloadTime     time.Time
	LastReloadDuration time.Duration
	ReloadDuration     time.Duration
}

// NewAnswer turns the machine's reply into the answer a client gets.
func NewAnswer(r fsm.Reply, f Facts) Answer {
	a := Answer{OK: r.OK}
	if !r.OK {
		a.Error = r.Error
		if a.Error == "" {
			a.Error = "failed (no reason given; see the master's log)"
		}
	}
	if s := r.Status; s != nil {
		a.Master = &Master{Pid: f.MasterPid, State: s.State, Generation: s.Generation, Size: s.Size, Reloads: s.Reloads, FailedReloads: s.FailedReloads,
			DroppedLogLines: f.DroppedLogLines, DroppedWorkerLines: f.DroppedWorkerLines, Goroutines: f.Goroutines,
			Version: f.Version, UptimeSeconds: seconds(f.MasterUptime), Listeners: f.Listeners,
			Reloading: s.ReloadTrigger, ReloadQueued: s.ReloadQueued,
			LastReload: newReload(s.LastReload, f.LastReloadTime, f.LastReloadDuration),
			Slots:      make([]Slot, 0, len(s.Slots))}
		if !f.StartTime.IsZero() {
			a.Master.StartTime = f.StartTime.UTC().Format(time.RFC3339Nano)
		}
		if a.Master.Listeners == nil {
			a.Master.Listeners = []Socket{}
		}
		for _, sl := range s.Slots {
			a.Master.Slots = append(a.Master.Slots, Slot{Slot: sl.Slot, Restarts: sl.Restarts, Failures: sl.Failures,
				BackoffSeconds: seconds(sl.Backoff), RestartPending: sl.RestartPending})
		}
		a.Workers = make([]Worker, 0, len(s.Workers))
		for _, w := range s.Workers {
			a.Workers = append(a.Workers, Worker{
				Pid: w.Pid, Generation: w.Generation, Slot: w.Slot,
				Current: w.Current, Role: role(w, s.Generation), Ready: w.Ready, Stopping: w.Stopping,
				UptimeSeconds: seconds(f.Uptime[w.Pid]),
				StatusText:    f.StatusText[w.Pid],
			})
		}
	}
	if r.Reload != nil {
		a.Reload = newReload(r.Reload, time.Now(), f.ReloadDuration)
	}
	return a
}

// seconds is d in seconds, to the millisecond.
func seconds(d time.Duration) float64 { return math.Round(d.Seconds()*1000) / 1000 }

func newReload(o *fsm.ReloadOutcome, at time.Time, took time.Duration) *Reload {
	if o == nil {
		return nil
	}
	r := &Reload{Result: o.Result, Reason: o.Reason, Trigger: o.Trigger, Generation: o.Generation, Previous: o.Previous,
		Pids: o.Pids, OldPids: o.Old, Seq: o.Seq, DurationSeconds: seconds(took)}
	if !at.IsZero() {
		r.Time = at.UTC().Format(time.RFC3339Nano)
	}
	return r
}

func role(w fsm.WorkerStatus, serving int) string {
	switch {
	case w.Current:
		return "current"
	case w.Generation > serving:
		return "new"
	}
	return "old"
}

// Respond writes the answer to r as one JSON object and a newline, and
// closes the connection. It gives up on a client that does not read
// within a few seconds, so the event loop never hangs on one.
func Respond(c *Conn, r fsm.Reply, f Facts) error {
	return c.answer(NewAnswer(r, f))
}

func (c *Conn) answer(a Answer) error {
	err := c.write(a)
	if cerr := c.c.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("control: close: %w", cerr)
	}
	return err
}

func (c *Conn) write(a Answer) error {
	b, err := json.Marshal(a)
	if err != nil {
		return fmt.Errorf("control: encode answer: %w", err)
	}
	c.c.SetWriteDeadline(time.Now().Add(writeTimeout))
	if _, err := c.c.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("control: write answer: %w", err)
	}
	return nil
}

// drain ends an answer already written: it discards what the client still
// sends (up to a bound), then closes.
func (c *Conn) drain() {
	c.c.CloseWrite()
	c.c.SetReadDeadline(time.Now().Add(time.Second))
	io.Copy(io.Discard, io.LimitReader(c.c, 1<<20))
	c.c.Close()
}
