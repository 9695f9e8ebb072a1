package osadapter

import (
	"log/slog"

	"github.com/mworker/mworker/internal/listen"
)

// takeListeners gets the listening sockets every worker shares: those of
// the image that exec'd this one; else those systemd passed (socket
// activation) followed by those of --listen, bound now, before any worker
// (and made non-blocking when nonblocking is set; systemd's keep the mode
// its NonBlocking= gave them, and an earlier image's the mode it set).
func takeListeners(specs []string, nonblocking bool) ([]listen.Listener, error) {
	ls, err := listen.Inherited()
	if err != nil || len(ls) > 0 {
		return ls, err
	}
	if ls, err = listen.Activated(); err != nil {
		return nil, err
	}
	parsed, err := listen.ParseSpecs(specs)
	if err == nil {
		var bound []listen.Listener
		if bound, err = listen.Bind(parsed); err == nil {
			if !nonblocking {
				return append(ls, bound...), nil
			}
			if err = listen.SetNonblocking(bound); err == nil {
				return append(ls, bound...), nil
			}
			listen.Close(bound)
		}
	}
	listen.Close(ls)
	return nil, err
}

// useListeners hands ls to the loop's fd registry, which owns them from
// now on: it passes them to every worker as fds 3.. and keeps them open
// across re-execs. The caller drops ls.
func (l *loop) useListeners(ls []listen.Listener) error {
	for i, ln := range ls {
		o, err := l.fds.addListener(ln.Name, ln.File)
		if err != nil {
			// The registry closes what it owns; the rest is still ours.
			listen.Close(ls[i:])
			return err
		}
		o.addr = ln.URL()
		l.logf(slog.LevelInfo, "listening", "name", ln.Name, "address", ln.URL(), "fd", 3+i)
	}
	if len(ls) > 0 {
		l.execEnv = append(l.execEnv, listen.EnvInherited+"="+listen.Encode(ls))
	}
	return nil
}
