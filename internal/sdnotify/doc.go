// Package sdnotify speaks systemd's notify protocol (sd_notify(3)) both
// ways: the master tells its own service manager about itself (Notify),
// and it listens for READY=1 and friends from each of its workers
// (Socket).
//
// A notify datagram is KEY=VALUE lines; Parse reads one strictly (see its
// doc) and rejects the rest with an error wrapping ErrMalformed or
// ErrTooLarge.
//
// The caller has a few duties.
//
// As the service manager of its workers (--ready notify):
//
//  1. Make one Socket per worker with Listen, before the worker starts, at
//     a unique path in a directory from MakeDir, and give the worker
//     NOTIFY_SOCKET=Addr(), never the master's own. Not at an abstract
//     "@NAME": another uid can read those names and bind the next one
//     first (Listen then fails with EADDRINUSE), and some clients take
//     NOTIFY_SOCKET only as a path. On EADDRINUSE, try the next name.
//  2. Call Receive in a loop (it blocks; one goroutine per socket). An
//     error wrapping ErrRejected is a datagram to log at debug level,
//     with its pid and uid, before receiving again; any other error ends
//     the loop. A Datagram without error carries the parsed Message;
//     Message.Ready marks the worker ready, whichever process of the
//     worker's tree sent it: the socket names the worker.
//  3. Close the socket when its worker is gone; Close wakes the loop and
//     removes the socket file. Remove the MakeDir directory at final exit.
//  4. Across a re-exec, hand the next image File() of each socket whose
//     worker may still send (keep it open with close-on-exec cleared,
//     name it in the environment) and take it over there with FromFile:
//     a datagram queued meanwhile is not lost. Sockets only accept
//     senders of the master's own real uid.
//
// As a service of its own manager, call Notify with Ready, Reloading,
// Stopping and Status (joined with Join) at the moments docs/design.md
// names ("systemd and containers").
// Notify and Send never block: a full queue drops the datagram with an
// error wrapping ErrQueueFull; log it once, not once per send.
// Notify is a no-op without NOTIFY_SOCKET; it leaves the variable set for
// the next image, so keep it out of the workers' environment yourself.
package sdnotify
