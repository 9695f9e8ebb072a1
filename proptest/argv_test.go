package proptest

import (
	"regexp"
	"slices"
	"strconv"
	"testing"

	"github.com/mworker/mworker/fsm"
	"pgregory.net/rapid"
)

// integer is ReloadArgv's documented notion of a pid word: an optional sign
// and digits, however long.
var integer = regexp.MustCompile(`^[+-]?[0-9]+$`)

// withoutLists is the head of an argv with its -sf/-st lists removed, by the
// documented rule: the word "-sf" or "-st" (never argv[0]) and every
// integer word after it.
func withoutLists(head []string) []string {
	var out []string
	for i := 0; i < len(head); i++ {
		if i > 0 && (head[i] == "-sf" || head[i] == "-st") {
			for i+1 < len(head) && integer.MatchString(head[i+1]) {
				i++
			}
			continue
		}
		out = append(out, head[i])
	}
	return out
}

func cut(argv []string) (head, tail []string) {
	for i, a := range argv {
		if i > 0 && a == "--" {
			return argv[:i], argv[i:]
		}
	}
	return argv, nil
}

var argvWords = []string{
	"run", "-n", "3", "-sf", "-st", "12", "-1", "+5", "0", "99999999999999999999",
	"-stop-signal", "--stop-signal", "/sf", "-sfx", "x-sf", "-s", "f", "TERM", "", "-", "--",
}

// TestReloadArgv checks fsm.ReloadArgv on random command lines: earlier
// lists gone, exactly one -sf list with the given pids right before "--",
// nothing after "--" touched, look-alike words kept, the input unchanged.
func TestReloadArgv(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		argv := append([]string{rapid.SampledFrom([]string{"mworker", "-sf", "--"}).Draw(t, "argv0")},
			rapid.SliceOfN(rapid.SampledFrom(argvWords), 0, 14).Draw(t, "words")...)
		pids := rapid.SliceOfN(rapid.IntRange(1, 1<<22), 0, 6).Draw(t, "pids")
		in := slices.Clone(argv)

		out := fsm.ReloadArgv(argv, pids)

		if !slices.Equal(argv, in) {
			t.Fatalf("ReloadArgv changed its input: %q -> %q", in, argv)
		}
		head, tail := cut(argv)
		outHead, outTail := cut(out)
		if !slices.Equal(outTail, tail) {
			t.Fatalf("after --: %q, want %q untouched (argv %q)", outTail, tail, argv)
		}
		var list []string
		if len(pids) > 0 {
			list = append(list, "-sf")
			for _, p := range pids {
				list = append(list, strconv.Itoa(p))
			}
		}
		if len(outHead) < len(list) || !slices.Equal(outHead[len(outHead)-len(list):], list) {
			t.Fatalf("head %q does not end with %q (argv %q)", outHead, list, argv)
		}
		kept := outHead[:len(outHead)-len(list)]
		if want := withoutLists(head); !slices.Equal(kept, want) {
			t.Fatalf("head before the list %q, want %q (argv %q)", kept, want, argv)
		}
		for i, w := range kept {
			if i > 0 && (w == "-sf" || w == "-st") {
				t.Fatalf("an earlier %s list survived in %q (argv %q)", w, out, argv)
			}
		}
		for _, w := range []string{"-stop-signal", "--stop-signal", "/sf", "-sfx", "x-sf"} {
			if a, b := slices.Index(head, w) >= 0, slices.Index(kept, w) >= 0; a != b {
				t.Fatalf("word %q lost or invented: %q -> %q", w, argv, out)
			}
		}
		if again := fsm.ReloadArgv(out, pids); !slices.Equal(again, out) {
			t.Fatalf("not idempotent: %q -> %q -> %q", argv, out, again)
		}
	})
}

// sfList returns the pids of the -sf lists in argv's options and how many
// -sf and -st words they have.
func sfList(argv []string) (pids []int, sf, st int) {
	head, _ := cut(argv)
	for i := 1; i < len(head); i++ {
		switch head[i] {
		case "-st":
			st++
		case "-sf":
			sf++
			for i+1 < len(head) && integer.MatchString(head[i+1]) {
				i++
				p, _ := strconv.Atoi(head[i])
				pids = append(pids, p)
			}
		}
	}
	return pids, sf, st
}
