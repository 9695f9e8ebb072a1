package osadapter

import (
	"bytes"
	"encoding/base64"
	"encoding/gob"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/mworker/mworker/fsm"
)

// envState carries execState from one master image to the next. It is
// internal: no worker ever sees it.
const envState = "MWORKER_STATE"

// Resumed reports whether this image was started by a reload's re-exec of a
// running master, rather than by an operator: the handover of the previous
// image is in the environment. The command line uses it to let a worker
// command that has gone missing fail as a rolled-back generation instead of
// ending the master.
func Resumed() bool {
	_, ok := os.LookupEnv(envState)
	return ok
}

// maxStateLen keeps the variable under the kernel's limit on one
// environment string (MAX_ARG_STRLEN, 128 KiB), with room for the name.
const maxStateLen = 120 << 10

// execState is what survives a re-exec: the core's Handover plus what only
// the adapter knows.
type execState struct {
	// Path is the absolute path the first image was started from.
	Path     string
	Handover fsm.Handover
	// Deadlines are the CLOCK_MONOTONIC deadlines (ns) of Handover.Timers,
	// index by index, so that each timer fires at its original deadline.
	Deadlines []int64
	// Mask is the signal mask of the master's thread at the first start;
	// workers start with it.
	Mask [16]uint64
	// Ignored are the signals that were SIG_IGN at the first start.
	Ignored []int
	// Dir is the working directory of the first start, which workers
	// start in (workdir.go).
	Dir string `json:",omitempty"`
	// Spawned is the CLOCK_MONOTONIC start (ns) of each live worker, by
	// pid: status reports uptimes across re-execs.
	Spawned map[int]int64
	// NotifyDropped counts the notifications to the master's service
	// manager lost since the last that went through (serviceManager).
	NotifyDropped int
	// Status is what status says that needs the clock: the master's
	// start, the reloads' times, the workers' STATUS= texts.
	Status statusState
	// Metrics are the counters of --metrics that the adapter keeps.
	Metrics metricsState
	// Lingering are the process groups of exited workers still waiting
	// for their SIGKILL, by pgid, with its CLOCK_MONOTONIC deadline
	// (lingering.go).
	Lingering map[int]int64
	// Terminal is the terminal mode, decided at the first start, and
	// the worker given the terminal (terminal.go); nil when off.
	Terminal *terminalState `json:",omitempty"`
}

type terminalState struct{ Fg, Slot int }

// envCarried carries what is known only in the last microseconds before
// execve, so that it costs no encoding there: "<CLOCK_MONOTONIC ns>" then
// ",<signal>" for each signal delivered to the channel but not acted on.
// The new image feeds those signals after Start.
const envCarried = "MWORKER_EXEC_CARRIED"

func carried(sigs []syscall.Signal, now int64) string {
	b := make([]byte, 0, 64)
	b = append(b, envCarried+"="...)
	b = strconv.AppendInt(b, now, 10)
	for _, s := range sigs {
		if s != syscall.SIGCHLD { // the new image sweeps anyway
			b = append(b, ',')
			b = strconv.AppendInt(b, int64(s), 10)
		}
	}
	return string(b)
}

func parseCarried(v string) (execAt int64, sigs []syscall.Signal, err error) {
	fields := strings.Split(v, ",")
	if execAt, err = strconv.ParseInt(fields[0], 10, 64); err != nil {
		return 0, nil, fmt.Errorf("osadapter: bad %s %q", envCarried, v)
	}
	for _, f := range fields[1:] {
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 || n > 64 {
			return 0, nil, fmt.Errorf("osadapter: bad %s %q", envCarried, v)
		}
		sigs = append(sigs, syscall.Signal(n))
	}
	return execAt, sigs, nil
}

func (s *execState) encode() (string, error) {
	var b bytes.Buffer
	if err := gob.NewEncoder(&b).Encode(s); err != nil {
		return "", fmt.Errorf("osadapter: encode state for re-exec: %w", err)
	}
	out := base64.RawStdEncoding.EncodeToString(b.Bytes())
	if len(out) > maxStateLen {
		return "", fmt.Errorf("osadapter: state for re-exec is %d bytes, over the %d the kernel accepts in one environment variable: reduce --workers", len(out), maxStateLen)
	}
	return out, nil
}

func decodeState(v string) (*execState, error) {
	raw, err := base64.RawStdEncoding.DecodeString(v)
	if err != nil {
		return nil, fmt.Errorf("osadapter: bad %s: %w", envState, err)
	}
	var s execState
	if err := gob.NewDecoder(bytes.NewReader(raw)).Decode(&s); err != nil {
		return nil, fmt.Errorf("osadapter: bad %s: %w", envState, err)
	}
	return &s, nil
}
