package fsm

//go:generate go run ../internal/gendocs -docs ../docs
