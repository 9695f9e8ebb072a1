package osadapter

import (
	"bytes"
	"encoding/base64"
	"encoding/gob"
	"fmt"

	"github.com/mworker/mworker/fsm"
)

// envState carries execState from one master image to the next. It is
// internal: no worker ever sees it.
const envState = "MWORKER_STATE"

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
	// Signals were read from the channel but not yet acted on when the
	// exec began; the new image feeds them after Start.
	Signals []int
	// Mask is the signal mask of the master's thread at the first start;
	// workers start with it.
	Mask [16]uint64
	// Ignored are the signals that were SIG_IGN at the first start.
	Ignored []int
	// ExecAt is CLOCK_MONOTONIC (ns) just before execve.
	ExecAt int64
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
