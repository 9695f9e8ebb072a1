package fsm

import "strconv"

// ReloadArgv returns the command line of the next master image: argv with
// every earlier -sf/-st list removed and "-sf <pids>" inserted just before
// the "--" that ends mworker's own options (at the end when there is none).
// Nothing after "--" is touched: it belongs to the worker's command.
//
// A list is the word "-sf" or "-st" exactly, followed by every word that is
// an integer (a malformed "-1" included, so a bad list cannot leave a stray
// word behind). Words that merely start like a list ("-stop-signal",
// "/sf", "-sfx") are kept. With no pids, no "-sf" is added.
func ReloadArgv(argv []string, pids []int) []string {
	out := make([]string, 0, len(argv)+len(pids)+1)
	end := len(argv)
	for i, a := range argv {
		if i > 0 && a == "--" {
			end = i
			break
		}
	}
	for i := 0; i < end; i++ {
		a := argv[i]
		if i > 0 && (a == "-sf" || a == "-st") {
			for i+1 < end && isInteger(argv[i+1]) {
				i++
			}
			continue
		}
		out = append(out, a)
	}
	if len(pids) > 0 {
		out = append(out, "-sf")
		for _, p := range pids {
			out = append(out, strconv.Itoa(p))
		}
	}
	return append(out, argv[end:]...)
}

func isInteger(s string) bool {
	if len(s) > 0 && (s[0] == '-' || s[0] == '+') {
		s = s[1:]
	}
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
