// Package listen holds the master's listening sockets: it parses --listen
// values, binds them once, takes over sockets from systemd (socket
// activation) or from the image that exec'd this one, and lays them out
// for a worker as systemd would (fd 3.., LISTEN_FDS, LISTEN_FDNAMES).
//
// Every descriptor it returns is close-on-exec. Sockets it binds are in
// blocking mode, as systemd passes them; inherited ones keep the mode they
// came with. The package starts no goroutine and never accepts.
//
// The caller has a few duties:
//
//  1. At start, before any worker, take the sockets in this order:
//     Inherited (a re-exec'd image; if it returns listeners, bind nothing
//     else), then Activated (systemd), then Bind(ParseSpecs(--listen)).
//     Activated unsets LISTEN_FDS, LISTEN_PID and LISTEN_FDNAMES and
//     Inherited unsets EnvInherited, whatever they find. Mixing activated
//     and bound sockets is possible (fds 3.. come first); whether to allow
//     it is the caller's policy. Report a Bind error as it is: it is one
//     line that says how to fix it, and it comes before any worker starts.
//  2. Keep every Listener.File open for the master's whole life and never
//     read from it: the master holds the sockets, the workers accept.
//     Keep the *os.File itself referenced, not only its number: a File
//     nothing references is closed by its finalizer at a garbage
//     collection, and the number then names the next file opened.
//  3. To spawn a worker, remove the master's own activation variables
//     from the environment (IsActivationVar), add WorkerEnv(Names(ls)),
//     pass WorkerFiles(ls) as syscall.ProcAttr.Files, and have the child
//     set LISTEN_PID to its own pid before it execs the worker's command.
//  4. To re-exec the master, put EnvInherited=Encode(ls) in the new
//     image's environment and call KeepOnExec(Files(ls)) on the thread
//     that execs, right before execve; if execve fails, call
//     CloseOnExec(Files(ls)). The same two functions serve any other
//     descriptor that must survive the exec; take the file of a net.Conn
//     or net.Listener (the control socket) with Dup, not with net's File,
//     whose Fd makes the socket blocking for the master too.
//  5. Unix socket files are created with Spec.Mode (DefaultUnixMode, 0666,
//     as systemd's SocketMode=) and left in place at exit; Bind removes a
//     socket file that nothing answers on and refuses a live one or a
//     path that is not a socket. Access control is the directory's.
package listen
