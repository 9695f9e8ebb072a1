package sdnotify

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// MaxSize is the largest datagram accepted, in bytes: systemd's own limit
// (NOTIFY_BUFFER_MAX, one PIPE_BUF).
const MaxSize = 4096

// Errors a datagram is rejected with; each error Parse returns wraps one.
var (
	ErrMalformed = errors.New("malformed notify message")
	ErrTooLarge  = fmt.Errorf("notify message larger than %d bytes", MaxSize)
)

// Field is one KEY=VALUE line.
type Field struct {
	Key, Value string
}

// Message is one parsed notify datagram. The typed fields hold the first
// occurrence of their key, as systemd reads them; Fields holds every line
// in order, those included.
type Message struct {
	Ready     bool // READY=1
	Reloading bool // RELOADING=1
	Stopping  bool // STOPPING=1
	// MainPID is MAINPID=, 0 when absent.
	MainPID int
	// MonotonicUsec is MONOTONIC_USEC= (CLOCK_MONOTONIC in µs), 0 when absent.
	MonotonicUsec uint64
	Fields        []Field
}

// Value returns the value of the first line with key.
func (m Message) Value(key string) (string, bool) {
	for _, f := range m.Fields {
		if f.Key == key {
			return f.Value, true
		}
	}
	return "", false
}

// Status returns STATUS=, the free-form state text.
func (m Message) Status() (string, bool) { return m.Value("STATUS") }

// Errno returns ERRNO=, the errno a failing service reports.
func (m Message) Errno() (int, bool) {
	v, ok := m.Value("ERRNO")
	if !ok {
		return 0, false
	}
	n, _ := strconv.Atoi(v) // Parse checked it
	return n, true
}

// Format gives the datagram for the message: its Fields, one per line.
func (m Message) Format() string {
	var b strings.Builder
	for i, f := range m.Fields {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(f.Key)
		b.WriteByte('=')
		b.WriteString(f.Value)
	}
	return b.String()
}

// Parse reads a notify datagram: KEY=VALUE lines separated by '\n' (empty
// lines are skipped), at least one, at most MaxSize bytes in all, valid
// UTF-8 without NUL bytes. KEY is upper-case letters, digits and '_',
// starting with a letter or '_'. The values of the keys systemd defines
// are checked: READY, RELOADING, STOPPING must be 1; WATCHDOG 1 or
// trigger; MAINPID a positive pid; MONOTONIC_USEC, ERRNO and the *_USEC
// keys decimal numbers. Other keys are kept as they are.
func Parse(b []byte) (Message, error) {
	if len(b) > MaxSize {
		return Message{}, fmt.Errorf("sdnotify: %d bytes: %w", len(b), ErrTooLarge)
	}
	if !utf8.Valid(b) {
		return Message{}, fmt.Errorf("sdnotify: %w: not UTF-8", ErrMalformed)
	}
	var m Message
	seen := make(map[string]bool)
	for n, line := range strings.Split(string(b), "\n") {
		if line == "" {
			continue
		}
		key, value, ok := strings.Cut(line, "=")
		if !ok {
			return Message{}, lineError(n, line, "not KEY=VALUE")
		}
		if err := checkKey(key); err != nil {
			return Message{}, lineError(n, line, err.Error())
		}
		if strings.IndexByte(value, 0) >= 0 {
			return Message{}, lineError(n, line, "NUL byte in the value")
		}
		if err := checkValue(key, value); err != nil {
			return Message{}, lineError(n, line, err.Error())
		}
		m.Fields = append(m.Fields, Field{Key: key, Value: value})
		if seen[key] {
			continue // the first occurrence counts
		}
		seen[key] = true
		switch key {
		case "READY":
			m.Ready = true
		case "RELOADING":
			m.Reloading = true
		case "STOPPING":
			m.Stopping = true
		case "MAINPID":
			m.MainPID, _ = strconv.Atoi(value)
		case "MONOTONIC_USEC":
			m.MonotonicUsec, _ = strconv.ParseUint(value, 10, 64)
		}
	}
	if len(m.Fields) == 0 {
		return Message{}, fmt.Errorf("sdnotify: %w: no KEY=VALUE line", ErrMalformed)
	}
	return m, nil
}

func checkKey(key string) error {
	if key == "" {
		return errors.New("empty KEY")
	}
	for i := 0; i < len(key); i++ {
		c := key[i]
		switch {
		case c >= 'A' && c <= 'Z', c == '_':
		case c >= '0' && c <= '9' && i > 0:
		default:
			return errors.New("KEY is not upper-case letters, digits and '_'")
		}
	}
	return nil
}

func checkValue(key, value string) error {
	switch key {
	case "READY", "RELOADING", "STOPPING", "FDSTORE", "FDSTOREREMOVE", "BARRIER":
		if value != "1" {
			return fmt.Errorf("%s must be 1", key)
		}
	case "WATCHDOG":
		if value != "1" && value != "trigger" {
			return errors.New("WATCHDOG must be 1 or trigger")
		}
	case "MAINPID":
		// pid_t is 32 bits and the kernel caps pids at 2^22.
		if n, err := strconv.ParseInt(value, 10, 32); err != nil || n <= 0 || value[0] == '+' {
			return errors.New("MAINPID must be a positive pid")
		}
	case "ERRNO":
		if n, err := strconv.ParseInt(value, 10, 32); err != nil || n < 0 || value[0] == '+' {
			return errors.New("ERRNO must be a non-negative number")
		}
	case "MONOTONIC_USEC", "WATCHDOG_USEC", "EXTEND_TIMEOUT_USEC":
		if _, err := strconv.ParseUint(value, 10, 64); err != nil || value[0] == '+' {
			return fmt.Errorf("%s must be a number of microseconds", key)
		}
	}
	return nil
}

// lineError names the line (1-based) and a short, quoted excerpt of it.
func lineError(n int, line, why string) error {
	const excerpt = 64
	if len(line) > excerpt {
		cut := excerpt
		for cut > 0 && !utf8.RuneStart(line[cut]) {
			cut--
		}
		line = line[:cut] + "..."
	}
	return fmt.Errorf("sdnotify: %w: line %d %q: %s", ErrMalformed, n+1, line, why)
}
