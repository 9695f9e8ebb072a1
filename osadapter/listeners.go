package osadapter

import (
	"log/slog"
	"strconv"

	"github.com/mworker/mworker/internal/listen"
)

// takeListeners gets the listening sockets every worker shares: those of
// the image that exec'd this one; else those systemd passed (socket
// activation) followed by those of --listen, bound now, before any worker.
func takeListeners(specs []string) ([]listen.Listener, error) {
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
			return append(ls, bound...), nil
		}
	}
	listen.Close(ls)
	return nil, err
}

// useListeners passes ls to every worker as fds 3.. and keeps them open
// across re-execs.
func (l *loop) useListeners(ls []listen.Listener) {
	if len(ls) == 0 {
		return
	}
	if l.keep == nil {
		l.keep = make(map[string]int)
	}
	for i, ln := range ls {
		fd := int(ln.File.Fd())
		l.listen = append(l.listen, fd)
		l.listenAs = append(l.listenAs, ln.Name)
		l.keep["listener "+strconv.Itoa(i)+" "+ln.Name] = fd
		l.logf(slog.LevelInfo, "listening", "name", ln.Name, "address", ln.URL(), "fd", 3+i)
	}
	l.execEnv = append(l.execEnv, listen.EnvInherited+"="+listen.Encode(ls))
}
