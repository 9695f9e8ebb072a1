#!/usr/bin/env bash
#
# bench/run-all.sh: every benchmark of docs/performance.md, one after the
# other (never in parallel: they would measure each other), with the
# output of each kept in LOG.
#
#   bench/stop.sh            stop latency (normal scheduling)
#   RT=1 bench/stop.sh       stop latency under SCHED_FIFO
#   bench/start.sh           start overhead (hyperfine)
#   bench/idle.sh            idle CPU ticks and RSS
#   bench/reload-scaling.sh  reload round trip against workers
#   bench/orphans.sh         reaping 10,000 orphans
#   bench/execwindow.sh      the re-exec window (docs/signals.md)
#
# With OTHERS=1 it also runs the two measurements other sections of
# docs/performance.md own: `go test ./fsm -run XXX -bench Step -benchmem
# -count 3` (the core) and bench/reload.sh (reloads under load, wrk and
# haproxy).
#
# Takes about 4 minutes on 2 cores (about 3 more with OTHERS=1). Each script
# installs what it lacks from Debian, so run it as root or install tini,
# dumb-init and hyperfine (and wrk, haproxy for OTHERS=1) first.
#
# Environment (defaults in brackets):
#   OUT [docs/img]               where the PNGs go (passed on)
#   LOG [$TMPDIR/mworker-bench.log] where every script's output is appended
#   OTHERS [0]                   1: also the core benchmark and reload.sh
# and each script's own variables, passed on as they are.

set -euo pipefail

cd "$(dirname "$0")/.."
[ -f go.mod ] && [ -d cmd/mworker ] || { echo "run-all.sh: run me from an mworker checkout" >&2; exit 1; }
export OUT=${OUT:-docs/img}
LOG=${LOG:-${TMPDIR:-/tmp}/mworker-bench.log}
OTHERS=${OTHERS:-0}

# step TITLE COMMAND...: runs COMMAND, its output to the terminal and LOG.
step() {
	local title=$1
	shift
	{
		echo
		echo "=== $title ($(date -u +%FT%TZ), load average $(cut -d' ' -f1-3 /proc/loadavg))"
		echo "\$ $*"
	} | tee -a "$LOG"
	"$@" 2>&1 | tee -a "$LOG"
}

step "stop latency" bench/stop.sh
step "stop latency, SCHED_FIFO" env RT=1 bench/stop.sh
step "start overhead" bench/start.sh
step "idle cost" bench/idle.sh
step "reload round trip against workers" bench/reload-scaling.sh
step "reaping orphans" bench/orphans.sh
step "re-exec window" bench/execwindow.sh
if [ "$OTHERS" = 1 ]; then
	step "the core" go test ./fsm -run XXX -bench Step -benchmem -count 3
	step "reloads under load" bench/reload.sh
fi
echo
echo "run-all.sh: done; output in $LOG, plots in $OUT"
