package osadapter

import (
	"errors"
	"log/slog"

	"github.com/mworker/mworker/fsm"
	"github.com/mworker/mworker/internal/sdnotify"
)

// serviceManager carries fsm.Notify actions to the master's own service
// manager, at the NOTIFY_SOCKET the master was started with (a path or an
// abstract "@NAME"). The variable stays in the master's environment, so
// the next image finds it after a re-exec; workers never see it
// (workerEnv).
//
// A send never blocks (sdnotify.Send): a service manager that does not
// read its socket loses the notification. The first loss is logged as a
// warning, the next ones only counted, and when a send goes through again
// the count is logged; dropped crosses a re-exec (execState), so that a
// manager deaf through many reloads costs one warning, not one per image.
type serviceManager struct {
	addr string
	pid  int
	now  func() int64 // CLOCK_MONOTONIC, ns
	log  *slog.Logger
	// announced is true once READY=1 went out with MAINPID, in this image
	// or an earlier one (fsm.Handover.Announced).
	announced bool
	// dropped counts the notifications lost since the last one that went
	// through.
	dropped int
}

func (s *serviceManager) Notify(n fsm.Notify) error {
	var states []string
	switch n.State {
	case fsm.NotifyReady:
		if s.announced {
			states = append(states, "READY=1")
		} else {
			states = append(states, sdnotify.Ready(s.pid))
		}
	case fsm.NotifyReloading:
		states = append(states, sdnotify.ReloadingAt(uint64(s.now()/1000)))
	case fsm.NotifyStopping:
		states = append(states, sdnotify.Stopping())
	default:
		return errorf("unknown notify state %v", n.State)
	}
	if n.Status != "" {
		states = append(states, sdnotify.Status(n.Status))
	}
	err := sdnotify.Send(s.addr, sdnotify.Join(states...))
	if errors.Is(err, sdnotify.ErrQueueFull) {
		s.dropped++
		if s.dropped == 1 {
			s.log.Warn("the service manager is not reading its notify socket: notifications are dropped until it does",
				"addr", s.addr, "action", n.String())
		}
		return nil
	}
	if err != nil {
		return err
	}
	if s.dropped > 0 {
		s.log.Info("the service manager reads its notify socket again", "addr", s.addr, "dropped", s.dropped)
		s.dropped = 0
	}
	if n.State == fsm.NotifyReady {
		s.announced = true
	}
	return nil
}
