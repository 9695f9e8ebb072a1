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
			DroppedLogLines: f.DroppedLogLines, DroppedWorkerLines: f.DroppedWorkerLines, Goroutines: f.Goroutines}
		a.Workers = make([]Worker, 0, len(s.Workers))
		for _, w := range s.Workers {
			a.Workers = append(a.Workers, Worker{
				Pid: w.Pid, Generation: w.Generation, Slot: w.Slot,
				Current: w.Current, Role: role(w, s.Generation), Ready: w.Ready, Stopping: w.Stopping,
				UptimeSeconds: math.Round(f.Uptime[w.Pid].Seconds()*1000) / 1000,
			})
		}
	}
	return a
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
