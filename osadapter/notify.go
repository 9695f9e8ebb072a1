package osadapter

import (
	"github.com/mworker/mworker/fsm"
	"github.com/mworker/mworker/internal/sdnotify"
)

// serviceManager carries fsm.Notify actions to the master's own service
// manager, at the NOTIFY_SOCKET the master was started with (a path or an
// abstract "@NAME"). The variable stays in the master's environment, so
// the next image finds it after a re-exec; workers never see it
// (workerEnv).
type serviceManager struct {
	addr string
	pid  int
	now  func() int64 // CLOCK_MONOTONIC, ns
	// announced is true once READY=1 went out with MAINPID, in this image
	// or an earlier one (fsm.Handover.Announced).
	announced bool
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
	if err := sdnotify.Send(s.addr, sdnotify.Join(states...)); err != nil {
		return err
	}
	if n.State == fsm.NotifyReady {
		s.announced = true
	}
	return nil
}
