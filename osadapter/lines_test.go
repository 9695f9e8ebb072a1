package osadapter

import (
	"bufio"
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// feedAll feeds the chunks in turn, then flushes, and returns the output.
func feedAll(s *lineSplitter, chunks ...string) (string, int) {
	var out []byte
	total := 0
	for _, c := range chunks {
		var n int
		out, n = s.feed(out, []byte(c), []byte("T"))
		total += n
	}
	out, n := s.flush(out, []byte("T"))
	return string(out), total + n
}

func TestPrefixLinesWholeAcrossReads(t *testing.T) {
	s := newLineSplitter(WorkerOutputPrefix, "stdout", 3, 1, 12345)
	got, n := feedAll(s, "one\ntw", "o\n", "", "thr", "ee\nfour")
	want := "[g3 s1 p12345] one\n[g3 s1 p12345] two\n[g3 s1 p12345] three\n[g3 s1 p12345] four\n"
	if got != want || n != 4 {
		t.Errorf("got %d lines %q, want 4 %q", n, got, want)
	}
	// An empty line is a line.
	if got, _ := feedAll(newLineSplitter(WorkerOutputPrefix, "stdout", 1, 0, 7), "\n\n"); got != "[g1 s0 p7] \n[g1 s0 p7] \n" {
		t.Errorf("empty lines: %q", got)
	}
}

func TestLongLineCutAndMarked(t *testing.T) {
	long := strings.Repeat("x", MaxWorkerLine+100)
	// Whole in one read, and in pieces across reads, the result is the same:
	// the first MaxWorkerLine bytes, marked, then the next line whole.
	for _, chunks := range [][]string{
		{long + "\nnext\n"},
		{long[:10], long[10 : MaxWorkerLine-1], long[MaxWorkerLine-1:], "\nne", "xt\n"},
	} {
		s := newLineSplitter(WorkerOutputPrefix, "stderr", 2, 0, 9)
		got, n := feedAll(s, chunks...)
		want := "[g2 s0 p9] " + long[:MaxWorkerLine] + TruncatedSuffix + "\n[g2 s0 p9] next\n"
		if got != want || n != 2 {
			t.Errorf("got %d lines (%d bytes), want 2 (%d bytes); tail %q", n, len(got), len(want), got[max(0, len(got)-40):])
		}
	}
	// Exactly MaxWorkerLine bytes is not cut.
	exact := strings.Repeat("y", MaxWorkerLine)
	if got, _ := feedAll(newLineSplitter(WorkerOutputPrefix, "stdout", 1, 0, 1), exact+"\n"); strings.Contains(got, TruncatedSuffix) {
		t.Errorf("a line of exactly MaxWorkerLine bytes was marked truncated")
	}
	// A cut never splits a UTF-8 character.
	multi := strings.Repeat("é", MaxWorkerLine) // 2 bytes each
	s := newLineSplitter(WorkerOutputPrefix, "stdout", 1, 0, 1)
	got, _ := feedAll(s, "a"+multi+"\n")
	line := strings.TrimSuffix(strings.TrimPrefix(got, "[g1 s0 p1] "), TruncatedSuffix+"\n")
	if !utf8.ValidString(line) || len(line) != MaxWorkerLine-1 {
		t.Errorf("cut line: %d bytes, valid UTF-8 %v; want %d valid", len(line), utf8.ValidString(line), MaxWorkerLine-1)
	}
}

func TestPartialLastLineFlushed(t *testing.T) {
	s := newLineSplitter(WorkerOutputPrefix, "stdout", 1, 2, 3)
	out, n := s.feed(nil, []byte("done\nno newline"), nil)
	if string(out) != "[g1 s2 p3] done\n" || n != 1 {
		t.Fatalf("before the end: %q", out)
	}
	out, n = s.flush(nil, nil)
	if string(out) != "[g1 s2 p3] no newline\n" || n != 1 {
		t.Errorf("flushed: %q", out)
	}
	if out, n := s.flush(nil, nil); len(out) != 0 || n != 0 {
		t.Errorf("flushed twice: %q", out)
	}
}

type workerLine struct {
	Time       string `json:"time"`
	Stream     string `json:"stream"`
	Pid        int    `json:"pid"`
	Generation int    `json:"generation"`
	Slot       int    `json:"slot"`
	Text       string `json:"text"`
	Truncated  bool   `json:"truncated"`
}

func TestJSONLines(t *testing.T) {
	texts := []string{
		`plain`,
		`quote " backslash \ tab` + "\t" + `cr` + "\r" + `bell` + "\x07" + `nul` + "\x00",
		"invalid \xff\xfe utf-8 \xe2\x82 cut",
		"é ü 日本 \u2028 \u2029 🙂",
		``,
	}
	s := newLineSplitter(WorkerOutputJSON, "stderr", 4, 3, 4242)
	out, n := s.feed(nil, []byte(strings.Join(texts, "\n")+"\n"+strings.Repeat("z", MaxWorkerLine+1)+"\n"), stamp(testTime))
	if n != len(texts)+1 {
		t.Fatalf("%d lines, want %d", n, len(texts)+1)
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(nil, 1<<20)
	i := 0
	for ; sc.Scan(); i++ {
		var l workerLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("line %d does not parse: %v: %q", i, err, sc.Bytes())
		}
		if l.Stream != "stderr" || l.Pid != 4242 || l.Generation != 4 || l.Slot != 3 || l.Time != "2026-01-02T03:04:05.006007008Z" {
			t.Errorf("line %d: %+v", i, l)
		}
		if i == len(texts) {
			if !l.Truncated || len(l.Text) != MaxWorkerLine {
				t.Errorf("long line: truncated %v, %d bytes", l.Truncated, len(l.Text))
			}
			continue
		}
		want := strings.ToValidUTF8(texts[i], "\uFFFD")
		if texts[i] == "invalid \xff\xfe utf-8 \xe2\x82 cut" {
			want = "invalid \uFFFD\uFFFD utf-8 \uFFFD\uFFFD cut" // one per byte, as encoding/json
		}
		if l.Text != want || l.Truncated {
			t.Errorf("line %d: text %q truncated %v, want %q", i, l.Text, l.Truncated, want)
		}
		// What encoding/json makes of the same text, byte for byte.
		std, _ := json.Marshal(texts[i])
		if got := `"` + string(appendJSONText(nil, []byte(texts[i]))) + `"`; got != string(std) {
			t.Errorf("line %d encoded %s, encoding/json %s", i, got, std)
		}
	}
	if i != n {
		t.Errorf("%d lines parsed, %d made", i, n)
	}
}

func BenchmarkJSONLines(b *testing.B) {
	s := newLineSplitter(WorkerOutputJSON, "stdout", 1, 0, 1)
	p := bytes.Repeat([]byte("GET /index.html 200 1234 bytes in 0.3 ms from 10.0.0.1\n"), 1000)
	var dst []byte
	b.SetBytes(int64(len(p)))
	for b.Loop() {
		dst, _ = s.feed(dst[:0], p, stamp(testTime))
	}
}

var testTime = time.Date(2026, 1, 2, 3, 4, 5, 6007008, time.UTC)
