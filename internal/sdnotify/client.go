package sdnotify

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// EnvNotifySocket is where the service manager tells a service its notify
// socket.
const EnvNotifySocket = "NOTIFY_SOCKET"

// ErrQueueFull is wrapped by Send's error when the receiver's queue is
// full: the receiver is not reading, and the datagram was dropped.
var ErrQueueFull = errors.New("the receiver's queue is full (it is not reading): datagram dropped")

// Notify sends state to the service manager at $NOTIFY_SOCKET. With the
// variable unset or empty it does nothing and returns nil. It reads the
// variable on every call and leaves it set: a re-exec'd master needs it
// too (keep it out of the workers' environment instead).
func Notify(state string) error {
	return Send(os.Getenv(EnvNotifySocket), state)
}

// Send sends state as one datagram to addr: an absolute path or an
// abstract "@NAME". An empty addr does nothing.
//
// Send never blocks, as systemd's own sd_notify does not: when the
// receiver's queue is full, the datagram is dropped and the error wraps
// ErrQueueFull (and EAGAIN). A caller that must not lose the state (a
// worker's READY=1) may send it again later.
func Send(addr, state string) error {
	if addr == "" {
		return nil
	}
	if err := checkAddr(addr); err != nil {
		return err
	}
	if len(state) > MaxSize {
		return fmt.Errorf("sdnotify: state of %d bytes: %w", len(state), ErrTooLarge)
	}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("sdnotify: socket: %w", err)
	}
	defer unix.Close(fd)
	err = unix.Sendto(fd, []byte(state), unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL, &unix.SockaddrUnix{Name: addr})
	if errors.Is(err, unix.EAGAIN) {
		return fmt.Errorf("sdnotify: send to %s: %w (%w)", addr, ErrQueueFull, err)
	}
	if err != nil {
		return fmt.Errorf("sdnotify: send to %s: %w", addr, err)
	}
	return nil
}

// Ready is "READY=1\nMAINPID=pid": the service is up, and pid is its main
// process (the master, whose pid a re-exec keeps).
func Ready(mainPID int) string {
	return "READY=1\nMAINPID=" + strconv.Itoa(mainPID)
}

// Reloading is "RELOADING=1\nMONOTONIC_USEC=now" with now read from
// CLOCK_MONOTONIC, as Type=notify-reload requires.
func Reloading() (string, error) {
	usec, err := MonotonicUsec()
	if err != nil {
		return "", err
	}
	return ReloadingAt(usec), nil
}

// ReloadingAt is "RELOADING=1\nMONOTONIC_USEC=usec".
func ReloadingAt(usec uint64) string {
	return "RELOADING=1\nMONOTONIC_USEC=" + strconv.FormatUint(usec, 10)
}

// Stopping is "STOPPING=1".
func Stopping() string { return "STOPPING=1" }

// Status is "STATUS=text", with line breaks in text turned into spaces
// (a newline would end the field).
func Status(text string) string {
	return "STATUS=" + strings.NewReplacer("\r\n", " ", "\n", " ", "\r", " ").Replace(text)
}

// Join puts states in one datagram, e.g. Join(Ready(pid), Status("ok")).
func Join(states ...string) string {
	return strings.Join(states, "\n")
}

// MonotonicUsec reads CLOCK_MONOTONIC in microseconds, the clock systemd
// compares MONOTONIC_USEC with.
func MonotonicUsec() (uint64, error) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0, fmt.Errorf("sdnotify: clock_gettime(CLOCK_MONOTONIC): %w", err)
	}
	return uint64(ts.Sec)*1_000_000 + uint64(ts.Nsec)/1_000, nil
}
