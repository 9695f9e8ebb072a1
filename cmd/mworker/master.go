package main

import "github.com/mworker/mworker/osadapter"

// startMaster runs the master until it exits and returns its status.
func startMaster(cfg osadapter.Config) int { return osadapter.Run(cfg) }
