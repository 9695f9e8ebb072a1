package osadapter

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// FdEnv is one --fd-env NAME=FORMAT: a variable that names the worker's
// listener fds in a server's own format, for servers that ignore
// LISTEN_FDS and take inherited sockets from a variable of their own
// (nginx: NGINX="3;4;", written --fd-env 'NGINX={fds:;};').
//
// FORMAT is literal text with placeholders: {fds} expands to the listener
// fd numbers joined by commas ("3,4"), {fds:SEP} to the same joined by
// SEP ("{fds:;}" gives "3;4"). Any other brace is an error. A worker
// without listeners does not get the variable.
type FdEnv struct {
	Name  string
	parts []fdEnvPart
}

// firstListenerFd is the worker's fd of its first listener: after stdin,
// stdout and stderr.
const firstListenerFd = 3

// fdEnvPart is a literal text, or the fd list joined by sep.
type fdEnvPart struct {
	text string
	fds  bool
	sep  string
}

// reservedEnv are variables mworker sets itself: an --fd-env of one of
// them would be overwritten or filtered out.
var reservedEnv = append([]string{EnvGeneration, EnvSlot}, serviceManagerEnv...)

// ParseFdEnv parses NAME=FORMAT. Its errors are one line that names the
// bad part and how to write it.
func ParseFdEnv(spec string) (FdEnv, error) {
	name, format, ok := strings.Cut(spec, "=")
	if !ok {
		return FdEnv{}, fmt.Errorf("bad --fd-env %q: write NAME=FORMAT, such as 'NGINX={fds:;};'", spec)
	}
	if !validEnvName(name) {
		return FdEnv{}, fmt.Errorf("bad --fd-env name %q: use letters, digits and _, not starting with a digit, such as NGINX", name)
	}
	if slices.Contains(reservedEnv, name) || strings.HasPrefix(name, internalEnvPrefix) {
		return FdEnv{}, fmt.Errorf("bad --fd-env name %q: mworker sets it itself; choose the variable your server reads", name)
	}
	e := FdEnv{Name: name}
	hasFds := false
	for rest := format; rest != ""; {
		i := strings.IndexAny(rest, "{}")
		if i < 0 {
			e.parts = append(e.parts, fdEnvPart{text: rest})
			break
		}
		if i > 0 {
			e.parts = append(e.parts, fdEnvPart{text: rest[:i]})
		}
		rest = rest[i:]
		end := strings.IndexByte(rest, '}')
		if rest[0] == '}' || end < 0 {
			return FdEnv{}, fmt.Errorf("bad --fd-env %s format %q: unbalanced brace; the placeholders are {fds} (fds joined by commas) and {fds:SEP}", name, format)
		}
		ph := rest[1:end]
		rest = rest[end+1:]
		switch sep, hasSep := strings.CutPrefix(ph, "fds:"); {
		case ph == "fds":
			e.parts = append(e.parts, fdEnvPart{fds: true, sep: ","})
		case hasSep && sep != "" && !strings.Contains(sep, "{"):
			e.parts = append(e.parts, fdEnvPart{fds: true, sep: sep})
		default:
			return FdEnv{}, fmt.Errorf("bad --fd-env %s placeholder {%s}: use {fds} (fds joined by commas) or {fds:SEP} with a separator SEP, such as {fds:;}", name, ph)
		}
		hasFds = true
	}
	if !hasFds {
		return FdEnv{}, fmt.Errorf("bad --fd-env %s format %q: it names no fd; put {fds} or {fds:SEP} where the fd numbers go, such as 'NGINX={fds:;};'", name, format)
	}
	return e, nil
}

func validEnvName(s string) bool {
	if s == "" || s[0] >= '0' && s[0] <= '9' {
		return false
	}
	for _, c := range []byte(s) {
		if !(c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// String is the spec it was parsed from.
func (e FdEnv) String() string {
	var b strings.Builder
	b.WriteString(e.Name + "=")
	for _, p := range e.parts {
		switch {
		case !p.fds:
			b.WriteString(p.text)
		case p.sep == ",":
			b.WriteString("{fds}")
		default:
			b.WriteString("{fds:" + p.sep + "}")
		}
	}
	return b.String()
}

// expand is the NAME=VALUE of a worker whose listeners are fds 3..3+n-1.
func (e FdEnv) expand(n int) string {
	var b strings.Builder
	b.WriteString(e.Name + "=")
	for _, p := range e.parts {
		if !p.fds {
			b.WriteString(p.text)
			continue
		}
		for i := range n {
			if i > 0 {
				b.WriteString(p.sep)
			}
			b.WriteString(strconv.Itoa(firstListenerFd + i))
		}
	}
	return b.String()
}

// fdEnvNames are the variables of envs, which the master's own environment
// must not also hand to the workers.
func fdEnvNames(envs []FdEnv) []string {
	names := make([]string, len(envs))
	for i, e := range envs {
		names[i] = e.Name
	}
	return names
}
