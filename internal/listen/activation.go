package listen

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// The variables of systemd's socket activation protocol (sd_listen_fds(3)).
const (
	EnvListenFDs     = "LISTEN_FDS"
	EnvListenPID     = "LISTEN_PID"
	EnvListenFDNames = "LISTEN_FDNAMES"
)

// listenFDsStart is SD_LISTEN_FDS_START: the first passed descriptor.
const listenFDsStart = 3

// unknownName is what sd_listen_fds_with_names(3) reports for descriptors
// passed without LISTEN_FDNAMES.
const unknownName = "unknown"

// Activated takes over the descriptors systemd passed to this process
// (socket activation): when LISTEN_PID is this process's pid, fds 3 ..
// 3+LISTEN_FDS-1 are returned as listeners named by LISTEN_FDNAMES
// ("unknown" without it), with close-on-exec set and their blocking mode
// untouched. The three variables are unset in every case, so they never
// reach a worker or the next image. Without LISTEN_FDS, or for another
// pid, it returns no listeners and no error.
func Activated() ([]Listener, error) {
	fds, fdsSet := os.LookupEnv(EnvListenFDs)
	pid := os.Getenv(EnvListenPID)
	names, namesSet := os.LookupEnv(EnvListenFDNames)
	for _, k := range []string{EnvListenFDs, EnvListenPID, EnvListenFDNames} {
		if err := os.Unsetenv(k); err != nil {
			return nil, fmt.Errorf("listen: unset %s: %w", k, err)
		}
	}
	if !fdsSet || pid != strconv.Itoa(os.Getpid()) {
		return nil, nil
	}
	return adoptActivated(fds, names, namesSet)
}

func adoptActivated(fds, names string, namesSet bool) ([]Listener, error) {
	n, err := strconv.Atoi(fds)
	if err != nil || n < 0 {
		return nil, fmt.Errorf("listen: %s=%q is not a count of descriptors; the service manager that started mworker set it wrong", EnvListenFDs, fds)
	}
	if n == 0 {
		return nil, nil
	}
	var nameList []string
	if namesSet {
		nameList = strings.Split(names, ":")
		if len(nameList) != n {
			return nil, fmt.Errorf("listen: %s=%q names %d descriptors but %s=%d; set one name per socket", EnvListenFDNames, names, len(nameList), EnvListenFDs, n)
		}
	}
	ls := make([]Listener, 0, n)
	for i := range n {
		name := unknownName
		if nameList != nil {
			name = nameList[i]
		}
		l, err := adopt(listenFDsStart+i, name)
		if err != nil {
			_ = Close(ls)
			return nil, fmt.Errorf("listen: socket activation (%s=%d): %w", EnvListenFDs, n, err)
		}
		ls = append(ls, l)
	}
	return ls, nil
}
