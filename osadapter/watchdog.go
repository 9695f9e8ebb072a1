package osadapter

import (
	"errors"
	"log/slog"
	"strconv"
	"time"

	"github.com/mworker/mworker/internal/sdnotify"
)

// The variables by which systemd gives a service a watchdog (WatchdogSec=).
const (
	envWatchdogUsec = "WATCHDOG_USEC"
	envWatchdogPid  = "WATCHDOG_PID"
)

// masterWatchdog feeds the watchdog the service manager gave the master:
// WATCHDOG=1 to the master's NOTIFY_SOCKET every WATCHDOG_USEC/2, sent from
// the event loop between two events, so that a loop that stops turning
// stops the pings and systemd acts (WatchdogSec=). The variables stay in
// the master's environment, so a re-executed image pings too; workers
// never see them (workerEnv).
type masterWatchdog struct {
	addr   string
	every  int64 // ns
	next   int64 // CLOCK_MONOTONIC of the next ping; 0: at once
	failed bool  // the last ping could not be sent
}

// newMasterWatchdog reads env as sd_watchdog_enabled does: a watchdog of
// WATCHDOG_USEC microseconds, unless WATCHDOG_PID names another process.
// Variables the master cannot use give no watchdog and a warning to log.
func newMasterWatchdog(env []string, pid int) (w *masterWatchdog, warning string) {
	v, ok := lookupEnv(env, envWatchdogUsec)
	if !ok {
		return nil, ""
	}
	if p, ok := lookupEnv(env, envWatchdogPid); ok {
		n, err := strconv.Atoi(p)
		if err != nil || n <= 0 {
			return nil, "WATCHDOG_PID=" + p + " is not a pid: no watchdog pings"
		}
		if n != pid {
			return nil, "" // another process's watchdog, as systemd's own check says
		}
	}
	usec, err := strconv.ParseInt(v, 10, 64)
	if err != nil || usec <= 0 || usec > int64(time.Duration(1<<62)/time.Microsecond) {
		return nil, "WATCHDOG_USEC=" + v + " is not a positive number of microseconds: no watchdog pings"
	}
	addr, _ := lookupEnv(env, sdnotify.EnvNotifySocket)
	if addr == "" {
		return nil, "WATCHDOG_USEC is set but NOTIFY_SOCKET is not: no watchdog pings"
	}
	return &masterWatchdog{addr: addr, every: usec * int64(time.Microsecond) / 2}, ""
}

// pingWatchdog sends WATCHDOG=1 when one is due. It never blocks
// (sdnotify.Send): a ping the manager's full queue drops is lost, as a
// late one would be. The first failure is logged, the next ones only once
// a ping goes through again.
func (l *loop) pingWatchdog() {
	w := l.watchdog
	if w == nil {
		return
	}
	now := l.sys.Now()
	if now < w.next {
		return
	}
	w.next = now + w.every
	err := sdnotify.Send(w.addr, "WATCHDOG=1")
	switch {
	case err != nil && !w.failed:
		w.failed = true
		level := slog.LevelWarn
		if errors.Is(err, sdnotify.ErrQueueFull) {
			level = slog.LevelInfo // the manager is busy; serviceManager warns about a deaf one
		}
		l.logf(level, "cannot ping the service manager's watchdog", "addr", w.addr, "err", err.Error())
	case err == nil && w.failed:
		w.failed = false
		l.logf(slog.LevelInfo, "watchdog pings go through again", "addr", w.addr)
	}
}
