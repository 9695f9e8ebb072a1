module github.com/mworker/mworker

go 1.26.0

require github.com/qmuntal/stateless v1.7.2

require (
	github.com/coreos/go-systemd/v22 v22.7.0
	golang.org/x/sys v0.50.0
	pgregory.net/rapid v1.3.0
)
