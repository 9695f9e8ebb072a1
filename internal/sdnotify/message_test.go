package sdnotify

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		in   string
		want Message
	}{
		{"READY=1", Message{Ready: true, Fields: []Field{{"READY", "1"}}}},
		{"READY=1\n", Message{Ready: true, Fields: []Field{{"READY", "1"}}}},
		{"READY=1\nMAINPID=4242\nSTATUS=serving 2 workers", Message{
			Ready: true, MainPID: 4242,
			Fields: []Field{{"READY", "1"}, {"MAINPID", "4242"}, {"STATUS", "serving 2 workers"}},
		}},
		{"RELOADING=1\nMONOTONIC_USEC=18446744073709551615", Message{
			Reloading: true, MonotonicUsec: 1<<64 - 1,
			Fields: []Field{{"RELOADING", "1"}, {"MONOTONIC_USEC", "18446744073709551615"}},
		}},
		{"\nSTOPPING=1\n\nWATCHDOG=trigger\n", Message{Stopping: true, Fields: []Field{{"STOPPING", "1"}, {"WATCHDOG", "trigger"}}}},
		// First occurrence counts, every line is kept.
		{"MAINPID=7\nMAINPID=8", Message{MainPID: 7, Fields: []Field{{"MAINPID", "7"}, {"MAINPID", "8"}}}},
		{"STATUS=", Message{Fields: []Field{{"STATUS", ""}}}},
		{"STATUS=a=b=c", Message{Fields: []Field{{"STATUS", "a=b=c"}}}},
		{"X_CUSTOM1=anything at all ✓", Message{Fields: []Field{{"X_CUSTOM1", "anything at all ✓"}}}},
		{"ERRNO=0", Message{Fields: []Field{{"ERRNO", "0"}}}},
	}
	for _, tt := range tests {
		got, err := Parse([]byte(tt.in))
		if err != nil {
			t.Errorf("Parse(%q): %v", tt.in, err)
			continue
		}
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("Parse(%q) = %+v, want %+v", tt.in, got, tt.want)
		}
	}
}

func TestMessageAccessors(t *testing.T) {
	m, err := Parse([]byte("ERRNO=13\nSTATUS=cannot open\nSTATUS=later"))
	if err != nil {
		t.Fatal(err)
	}
	if n, ok := m.Errno(); !ok || n != 13 {
		t.Errorf("Errno() = %d, %v", n, ok)
	}
	if s, ok := m.Status(); !ok || s != "cannot open" {
		t.Errorf("Status() = %q, %v; want the first", s, ok)
	}
	if _, ok := m.Value("READY"); ok {
		t.Error("Value(READY) found in a message without it")
	}
	if _, ok := (Message{}).Errno(); ok {
		t.Error("Errno() found in an empty message")
	}
}

func TestParseRejects(t *testing.T) {
	tests := []struct {
		in   string
		want error
		why  string
	}{
		{"", ErrMalformed, "no KEY=VALUE line"},
		{"\n\n", ErrMalformed, "no KEY=VALUE line"},
		{"hello", ErrMalformed, `line 1 "hello": not KEY=VALUE`},
		{"READY=1\ngarbage", ErrMalformed, `line 2 "garbage": not KEY=VALUE`},
		{"=1", ErrMalformed, "empty KEY"},
		{"ready=1", ErrMalformed, "KEY is not upper-case"},
		{"1READY=1", ErrMalformed, "KEY is not upper-case"},
		{"READY =1", ErrMalformed, "KEY is not upper-case"},
		{"READY=0", ErrMalformed, "READY must be 1"},
		{"READY=1 ", ErrMalformed, "READY must be 1"},
		{"STOPPING=yes", ErrMalformed, "STOPPING must be 1"},
		{"WATCHDOG=2", ErrMalformed, "WATCHDOG must be 1 or trigger"},
		{"MAINPID=0", ErrMalformed, "MAINPID must be a positive pid"},
		{"MAINPID=-5", ErrMalformed, "MAINPID must be a positive pid"},
		{"MAINPID=+5", ErrMalformed, "MAINPID must be a positive pid"},
		{"MAINPID=4294967296", ErrMalformed, "MAINPID must be a positive pid"},
		{"MAINPID=", ErrMalformed, "MAINPID must be a positive pid"},
		{"MONOTONIC_USEC=-1", ErrMalformed, "MONOTONIC_USEC must be a number"},
		{"MONOTONIC_USEC=18446744073709551616", ErrMalformed, "MONOTONIC_USEC must be a number"},
		{"ERRNO=-1", ErrMalformed, "ERRNO must be a non-negative number"},
		{"STATUS=a\x00b", ErrMalformed, "NUL byte"},
		{"STATUS=\xff", ErrMalformed, "not UTF-8"},
		{"STATUS=" + strings.Repeat("x", MaxSize), ErrTooLarge, "4103 bytes"},
		{strings.Repeat("y", 100), ErrMalformed, `"` + strings.Repeat("y", 64) + `..."`},
	}
	for _, tt := range tests {
		_, err := Parse([]byte(tt.in))
		if !errors.Is(err, tt.want) {
			t.Errorf("Parse(%.40q) = %v, want %v", tt.in, err, tt.want)
			continue
		}
		msg := err.Error()
		if !strings.HasPrefix(msg, "sdnotify: ") || !strings.Contains(msg, tt.why) || strings.Contains(msg, "\n") {
			t.Errorf("Parse(%.40q) = %q, want one line saying %q", tt.in, msg, tt.why)
		}
	}
	if _, err := Parse([]byte("STATUS=" + strings.Repeat("x", MaxSize-7))); err != nil {
		t.Errorf("Parse of exactly MaxSize bytes: %v", err)
	}
}

func TestHelpersParse(t *testing.T) {
	tests := []struct {
		state string
		check func(Message) bool
	}{
		{Ready(4242), func(m Message) bool { return m.Ready && m.MainPID == 4242 && len(m.Fields) == 2 }},
		{ReloadingAt(123456789), func(m Message) bool { return m.Reloading && m.MonotonicUsec == 123456789 && len(m.Fields) == 2 }},
		{Stopping(), func(m Message) bool { return m.Stopping && len(m.Fields) == 1 }},
		{Join(Ready(9), Status("reload failed:\nworker 3 exited\r\nrolled back")), func(m Message) bool {
			s, _ := m.Status()
			return m.Ready && m.MainPID == 9 && s == "reload failed: worker 3 exited rolled back"
		}},
	}
	for _, tt := range tests {
		m, err := Parse([]byte(tt.state))
		if err != nil || !tt.check(m) {
			t.Errorf("helper state %q parses to %+v, %v", tt.state, m, err)
		}
	}
	if got := Ready(1); got != "READY=1\nMAINPID=1" {
		t.Errorf("Ready(1) = %q", got)
	}
	if got := ReloadingAt(5); got != "RELOADING=1\nMONOTONIC_USEC=5" {
		t.Errorf("ReloadingAt(5) = %q", got)
	}
}

func TestReloadingReadsMonotonicClock(t *testing.T) {
	before, err := MonotonicUsec()
	if err != nil {
		t.Fatal(err)
	}
	state, err := Reloading()
	if err != nil {
		t.Fatal(err)
	}
	after, _ := MonotonicUsec()
	m, err := Parse([]byte(state))
	if err != nil || !m.Reloading {
		t.Fatalf("Reloading() = %q: %+v, %v", state, m, err)
	}
	if m.MonotonicUsec < before || m.MonotonicUsec > after || before == 0 {
		t.Errorf("MONOTONIC_USEC=%d not within [%d, %d]", m.MonotonicUsec, before, after)
	}
}

// FuzzParse: Parse never panics; what it accepts is within the limit,
// formats back to a message it parses identically, and is no longer than
// the input; what it rejects gets one line wrapping a sentinel.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"READY=1", "READY=1\nMAINPID=1", "STATUS=x\n\nERRNO=2", "garbage", "=", "\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Parse(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrTooLarge) {
				t.Fatalf("Parse(%q) = %v, wraps no sentinel", b, err)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("Parse(%q) error spans lines: %q", b, err)
			}
			return
		}
		if len(b) > MaxSize || len(m.Fields) == 0 {
			t.Fatalf("Parse accepted %d bytes with %d fields", len(b), len(m.Fields))
		}
		out := m.Format()
		if len(out) > len(b) {
			t.Fatalf("Format gave %d bytes from %d", len(out), len(b))
		}
		again, err := Parse([]byte(out))
		if err != nil {
			t.Fatalf("Parse(Format(Parse(%q))) = %v", b, err)
		}
		if !reflect.DeepEqual(again, m) {
			t.Fatalf("round trip of %q: %+v then %+v", b, m, again)
		}
		for _, fl := range m.Fields {
			if strings.ContainsAny(fl.Key, "=\n") || strings.Contains(fl.Value, "\n") {
				t.Fatalf("field %+v holds a separator", fl)
			}
		}
	})
}
