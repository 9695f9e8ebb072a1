package osadapter

import (
	"bytes"
	"strconv"
	"time"
	"unicode/utf8"
)

// MaxWorkerLine is the longest worker line passed on whole with
// --worker-output prefix or json, in bytes, without its newline. A longer
// line is cut there (back to the start of a UTF-8 character when one
// begins in its last 3 bytes), marked (prefix: the suffix
// TruncatedSuffix; json: "truncated":true), and the rest of it, up to its
// newline, is discarded. 16 KiB holds any log line a person reads, a
// Java stack frame or a JSON record of a request, and bounds the memory a
// worker that writes no newline at all can make the master hold: 16 KiB
// per stream.
const MaxWorkerLine = 16 << 10

// TruncatedSuffix ends a line cut at MaxWorkerLine with --worker-output
// prefix.
const TruncatedSuffix = " [truncated]"

// Worker output modes (--worker-output).
const (
	WorkerOutputInherit = "inherit" // workers write to the master's own stdout and stderr
	WorkerOutputPrefix  = "prefix"  // each line tagged "[g3 s1 p12345] "
	WorkerOutputJSON    = "json"    // each line one JSON object
)

// lineSplitter turns one worker stream's bytes into whole lines, each
// encoded for the master's output: it keeps the line under way between
// reads, cuts a line at MaxWorkerLine, and encodes it with --worker-output
// prefix or json. One goroutine uses it.
type lineSplitter struct {
	json bool
	// head is what starts every encoded line: the prefix tag, or the JSON
	// object's fields up to "time"'s value (stream, pid, generation, slot
	// are put after it; see encode).
	head, tail []byte
	partial    []byte // the line under way, without newline, at most MaxWorkerLine
	skipping   bool   // the line under way was cut: its rest is discarded up to its newline
}

func newLineSplitter(mode, stream string, gen, slot, pid int) *lineSplitter {
	s := &lineSplitter{json: mode == WorkerOutputJSON}
	if s.json {
		// {"time":"…","stream":"stdout","pid":12345,"generation":3,"slot":1,"text":"…"}
		s.head = []byte(`{"time":"`)
		t := []byte(`","stream":"` + stream + `","pid":` + strconv.Itoa(pid) +
			`,"generation":` + strconv.Itoa(gen) + `,"slot":` + strconv.Itoa(slot) + `,"text":"`)
		s.tail = t
	} else {
		s.head = []byte("[g" + strconv.Itoa(gen) + " s" + strconv.Itoa(slot) + " p" + strconv.Itoa(pid) + "] ")
	}
	return s
}

// stamp is the time of a batch of lines, formatted as the master's own
// JSON log lines format theirs (slog's JSON handler: RFC 3339 with
// nanoseconds).
func stamp(t time.Time) []byte {
	return t.AppendFormat(make([]byte, 0, 40), time.RFC3339Nano)
}

// feed splits p, appending each line it completes, encoded, to dst; it
// returns dst and how many lines it appended. ts is the batch's stamp
// (json only; nil for prefix).
func (s *lineSplitter) feed(dst, p, ts []byte) ([]byte, int) {
	n := 0
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		chunk, complete := p, i >= 0
		if complete {
			chunk, p = p[:i], p[i+1:]
		} else {
			p = nil
		}
		if s.skipping {
			s.skipping = !complete
			continue
		}
		if len(s.partial)+len(chunk) > MaxWorkerLine {
			line := append(s.partial, chunk[:MaxWorkerLine-len(s.partial)]...)
			dst = s.encode(dst, cutAtRune(line), true, ts)
			n++
			s.partial = s.partial[:0]
			s.skipping = !complete
			continue
		}
		if !complete {
			s.partial = append(s.partial, chunk...)
			continue
		}
		line := chunk
		if len(s.partial) > 0 {
			line = append(s.partial, chunk...)
			s.partial = s.partial[:0]
		}
		dst = s.encode(dst, line, false, ts)
		n++
	}
	if cap(s.partial) > 4<<10 && len(s.partial) == 0 {
		s.partial = nil // a long line once is not kept
	}
	return dst, n
}

// flush appends the line under way, if any, as a line of its own: the
// worker closed the stream (it exited) without a last newline.
func (s *lineSplitter) flush(dst, ts []byte) ([]byte, int) {
	s.skipping = false
	if len(s.partial) == 0 {
		return dst, 0
	}
	dst = s.encode(dst, s.partial, false, ts)
	s.partial = nil
	return dst, 1
}

// cutAtRune drops a UTF-8 character that the cut at MaxWorkerLine split,
// so that a cut line stays valid text.
func cutAtRune(b []byte) []byte {
	for i := 1; i <= utf8.UTFMax-1 && i <= len(b); i++ {
		c := b[len(b)-i]
		if c < utf8.RuneSelf {
			return b // ASCII: nothing split
		}
		if utf8.RuneStart(c) {
			if r, size := utf8.DecodeRune(b[len(b)-i:]); r == utf8.RuneError && size <= 1 {
				return b[:len(b)-i] // an incomplete character: drop it
			}
			return b
		}
	}
	return b
}

func (s *lineSplitter) encode(dst, line []byte, truncated bool, ts []byte) []byte {
	if !s.json {
		dst = append(dst, s.head...)
		dst = append(dst, line...)
		if truncated {
			dst = append(dst, TruncatedSuffix...)
		}
		return append(dst, '\n')
	}
	dst = append(dst, s.head...)
	dst = append(dst, ts...)
	dst = append(dst, s.tail...)
	dst = appendJSONText(dst, line)
	if truncated {
		return append(dst, `","truncated":true}`+"\n"...)
	}
	return append(dst, `"}`+"\n"...)
}

const hexDigits = "0123456789abcdef"

// appendJSONText appends b as the inside of a JSON string: quote,
// backslash and control characters escaped, each byte that is not part of
// valid UTF-8 replaced by U+FFFD (as encoding/json does), and U+2028 and
// U+2029 escaped so that the line is also valid JavaScript.
func appendJSONText(dst, b []byte) []byte {
	start := 0
	for i := 0; i < len(b); {
		c := b[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			dst = append(dst, b[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, b[start:i]...)
			dst = append(dst, `\ufffd`...)
			i++
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, b[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	return append(dst, b[start:]...)
}
