package osadapter

import (
	"context"
	"log/slog"

	"github.com/mworker/mworker/fsm"
)

// Notifier carries fsm.Notify actions to the service manager (sd_notify).
type Notifier interface {
	Notify(fsm.Notify) error
}

// Replier sends fsm.Reply actions to the control client that asked.
type Replier interface {
	Reply(fsm.Reply) error
}

// debugTransport stands in for a missing Notifier or Replier: the action is
// only logged, at debug level.
type debugTransport struct{ log *slog.Logger }

func (d debugTransport) Notify(n fsm.Notify) error {
	d.log.Log(context.Background(), slog.LevelDebug, "no notify transport", "action", n.String())
	return nil
}

func (d debugTransport) Reply(r fsm.Reply) error {
	d.log.Log(context.Background(), slog.LevelDebug, "no control transport", "action", r.String())
	return nil
}
