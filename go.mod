module github.com/mworker/mworker

go 1.26.0

require github.com/qmuntal/stateless v1.7.2
