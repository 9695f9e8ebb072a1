// Package control is mworker's control socket: the server pieces the
// master's event loop drives, and the client behind `mworker CMD [ARG]
// --control PATH`, CMD one of the control commands of fsm.Commands and ARG
// its argument if it takes one (scale N, restart SLOT).
//
// The protocol is one request line per connection (the Name of a command
// of fsm.Commands, then a space and its argument if it takes one: "scale
// 4", "scale +2", "scale -1", "restart 3"; at most MaxRequest bytes) and
// one JSON object back, then close:
//
//	{"ok":true}                                    (reload, stop, restart)
//	{"ok":false,"error":"..."}
//	{"ok":true,"master":{...},"workers":[{...}]}   (status, scale)
//
// "stop wait" (mworker stop --wait) is the one request that gets two
// lines: the answer to the stop, then, on the same connection, Exit
// ({"exited":true,"exit_status":N}) just before the master exits.
//
// master.size is the desired number of workers (-n, then scale), workers
// the live ones. The client checks an argument before it connects (N a
// decimal integer, optionally signed; SLOT one of 0 or more); the machine
// judges it again.
//
// # The event loop's duties
//
//  1. Open the socket with Open(path) (Listen on a fresh start; it takes
//     over an inherited socket and the waiting reload connections after a
//     re-exec). Remove EnvNames from the environment the workers get (Open
//     already unsets them in the master's own).
//  2. Run Serve(requests) on a goroutine. Serve checks the peer's uid,
//     reads the request line and answers bad requests itself; every valid
//     request arrives on the channel as a Request.
//  3. Feed each Request to the machine as fsm.ControlRequest{ID, Command, Arg}
//     and keep its Conn, keyed by ID, until the machine replies.
//  4. For each fsm.Reply action, call Respond(conn, reply, facts) with the
//     facts only the adapter knows (the master's pid, worker uptimes); it
//     writes the answer and closes the connection. A Reply with no known
//     Conn (the client went away) is dropped.
//  5. Just before execve, call Pause (Serve stops accepting; clients that
//     connect later wait in the listen queue, which the next image
//     inherits; the reading of those already accepted is interrupted:
//     a request read in full is held, a client that has not sent its
//     whole line is kept for the next image to read), then take what is
//     left in the request channel without blocking, and Held (requests
//     the machine has not seen), and call PrepareExec with the
//     connections of the requests in fsm.Handover.Requests and those
//     queued requests; add Handoff.Env to the new image's environment.
//     The new image's Queued returns the queued requests, with their
//     IDs: feed them right after Start, before anything else. If execve
//     fails, call Handoff.Undo so that the fds are close-on-exec again,
//     Resume, feed the queued requests to the machine, and keep serving.
//  6. When the master exits, Close the listener: it removes the socket file
//     if it is still the one this master bound. Feed a "stop wait" request
//     (Arg WaitArg) to the machine as a plain stop, answer it with
//     RespondAndKeep, and as the very last act call ReportExit on its
//     Conn with the master's exit status.
package control
