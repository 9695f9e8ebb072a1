package listen

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// envChild makes the test binary act as a child process (tableflip- and
// stringer-style): the tests re-run it with this variable set to a mode.
const envChild = "LISTEN_TEST_CHILD"

func TestMain(m *testing.M) {
	switch mode := os.Getenv(envChild); mode {
	case "":
		os.Exit(m.Run())
	default:
		if err := runChild(mode); err != nil {
			fmt.Fprintln(os.Stderr, "child:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
}

// runChild is the child side of the process tests. Every mode prints one
// line per listener it ends up with, "NAME NETWORK ADDRESS cloexec=B
// nonblock=B", then "end", then answers one connection per listener with
// its name.
func runChild(mode string) error {
	var ls []Listener
	var err error
	switch mode {
	case "reexec-bind":
		// First image: bind, then exec itself with the listeners inherited.
		ls, err = Bind([]Spec{
			{Name: "web", Network: TCP, Address: "127.0.0.1:0"},
			{Name: "admin", Network: Unix, Address: os.Getenv("LISTEN_TEST_PATH"), Mode: DefaultUnixMode},
		})
		if err != nil {
			return err
		}
		// syscall.Exec keeps the first of two equal keys: replace ours.
		var env []string
		for _, kv := range os.Environ() {
			if !strings.HasPrefix(kv, envChild+"=") {
				env = append(env, kv)
			}
		}
		env = append(env, EnvInherited+"="+Encode(ls), envChild+"=reexec-inherit")
		if err := KeepOnExec(Files(ls)); err != nil {
			return err
		}
		err = syscall.Exec("/proc/self/exe", os.Args, env)
		return fmt.Errorf("exec: %w", err)
	case "reexec-inherit":
		ls, err = Inherited()
		if _, set := os.LookupEnv(EnvInherited); set {
			return fmt.Errorf("%s still set after Inherited", EnvInherited)
		}
	case "activated":
		// What the trampoline does: LISTEN_PID is our own pid.
		os.Setenv(EnvListenPID, strconv.Itoa(os.Getpid()))
		ls, err = Activated()
	case "activated-other-pid":
		os.Setenv(EnvListenPID, strconv.Itoa(os.Getppid()))
		ls, err = Activated()
	default:
		return fmt.Errorf("unknown mode %q", mode)
	}
	if err != nil {
		return err
	}
	for _, k := range []string{EnvListenFDs, EnvListenPID, EnvListenFDNames} {
		if v, set := os.LookupEnv(k); set {
			return fmt.Errorf("%s=%s still set", k, v)
		}
	}
	for _, l := range ls {
		fd, _ := unix.FcntlInt(l.File.Fd(), unix.F_GETFD, 0)
		fl, _ := unix.FcntlInt(l.File.Fd(), unix.F_GETFL, 0)
		fmt.Printf("%s %s %s fd=%d cloexec=%v nonblock=%v\n", l.Name, l.Network, l.Address, l.File.Fd(), fd&unix.FD_CLOEXEC != 0, fl&unix.O_NONBLOCK != 0)
	}
	fmt.Println("end")
	for _, l := range ls {
		nl, err := net.FileListener(l.File)
		if err != nil {
			return err
		}
		if d, ok := nl.(interface{ SetDeadline(time.Time) error }); ok {
			d.SetDeadline(time.Now().Add(20 * time.Second))
		}
		c, err := nl.Accept()
		if err != nil {
			return fmt.Errorf("%s: accept: %w", l.Name, err)
		}
		fmt.Fprint(c, l.Name)
		c.Close()
		nl.Close()
	}
	return nil
}
