#!/usr/bin/env bash
#
# bench/stop.sh: stop latency, mworker against tini and dumb-init.
#
# What it measures: the time from SIGTERM sent to the supervisor until the
# supervisor's parent sees it exit (wait returns), with one `sleep 1000`
# worker. That covers the supervisor catching the signal, passing it on,
# the worker dying, the supervisor reaping it and exiting.
#
#   mworker run --restart no -- sleep 1000
#                                 (the release build, CGO_ENABLED=0; the
#                                 row mworker-cgo is the same with cgo on,
#                                 as a plain `go build` makes it)
#   tini -- sleep 1000
#   dumb-init sleep 1000
#   gostop -- sleep 1000          (bench/gostop: the least a Go supervisor
#   gostop -lock -- sleep 1000     does; -lock pins main to its thread as
#                                  mworker does: the Go runtime's share)
#
# Each round runs each once, in an order that rotates from round to
# round, through bench/stoptime (a Go program): it starts the supervisor,
# polls /proc until its `sleep` child exists, waits 100 ms, sends SIGTERM
# and times until wait returns, on CLOCK_MONOTONIC.
#
# Prints a table (median, p90, min, max in ms; the median's ratio to
# tini's) and writes OUT/stop-latency.png, a box plot of every round.
# The target for mworker is a median at most 1.5x tini's.
#
# Usage: bench/stop.sh   (as root, or with tini and dumb-init installed)
#
# Environment (defaults in brackets):
#   ROUNDS [30]        rounds (each runs every tool once)
#   OUT [docs/img]     where the PNG goes
#   RT [0]             1: run every round under `chrt -f 20` (SCHED_FIFO),
#                      so that other jobs on a loaded machine do not delay
#                      the wakeups; gives the cost of the tools themselves
#                      and writes OUT/stop-latency-rt.png instead
#
# Installs tini and dumb-init with apt-get when they are missing; builds
# mworker, bench/stoptime, bench/gostop and bench/plot from this checkout. Bounded:
# each start and each stop gives up after 10 s.

set -euo pipefail

ROUNDS=${ROUNDS:-30}
RT=${RT:-0}

. "$(dirname "$0")/lib.sh"
bench_setup tini dumb-init
OUT=${OUT:-docs/img}
mkdir -p "$OUT"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/mworker-stop-bench.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM

build_mworker "$tmp/mworker"
MWORKER_CGO=1 build_mworker "$tmp/mworker-cgo"
go build -o "$tmp/stoptime" ./bench/stoptime || die "go build ./bench/stoptime failed"
go build -o "$tmp/gostop" ./bench/gostop || die "go build ./bench/gostop failed"
(cd bench/plot && go build -o "$tmp/plot" .) || die "go build bench/plot failed"

tools=(mworker mworker-cgo tini dumb-init gostop gostop-lock)
prio=(env)
png=stop-latency.png
sched="normal scheduling (SCHED_OTHER)"
if [ "$RT" = 1 ]; then
	prio=(chrt -f 20)
	png=stop-latency-rt.png
	sched="SCHED_FIFO 20 (chrt -f 20)"
fi
command_of() {
	case $1 in
	mworker) echo "$tmp/mworker run --restart no -- sleep 1000" ;;
	mworker-cgo) echo "$tmp/mworker-cgo run --restart no -- sleep 1000" ;;
	tini) echo "tini -- sleep 1000" ;;
	dumb-init) echo "dumb-init sleep 1000" ;;
	gostop) echo "$tmp/gostop -- sleep 1000" ;;
	gostop-lock) echo "$tmp/gostop -lock -- sleep 1000" ;;
	esac
}

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(uname -sr), $(go version | awk '{ print $3 }')"
echo "tini: $(tini --version 2>&1 | head -1); dumb-init: $(dumb-init --version 2>&1 | head -1)"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "$ROUNDS rounds, SIGTERM to exit, one 'sleep 1000' worker, $sched"

: >"$tmp/data"
for ((r = 0; r < ROUNDS; r++)); do
	for ((i = 0; i < ${#tools[@]}; i++)); do
		tool=${tools[$(((r + i) % ${#tools[@]}))]}
		# shellcheck disable=SC2046 # the command is split on purpose
		read -r us status < <("${prio[@]}" "$tmp/stoptime" -- $(command_of "$tool")) || die "stoptime failed for $tool"
		[ "$status" -eq 143 ] || echo "stop.sh: $tool exited $status, not 143 (SIGTERM)" >&2
		printf '%s\t%s\n' "$tool" "$us" >>"$tmp/data"
	done
done
echo "load average after:  $(cut -d' ' -f1-3 /proc/loadavg)"

# stats TOOL: median p90 min max in ms
stats() {
	awk -F'\t' -v t="$1" '$1 == t { print $2 }' "$tmp/data" | sort -n | awk '
		{ v[NR] = $1 }
		END {
			med = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
			p90 = v[int(NR * 0.9 + 0.999999)]
			printf "%.2f %.2f %.2f %.2f %d\n", med / 1000, p90 / 1000, v[1] / 1000, v[NR] / 1000, NR
		}'
}
read -r tini_med _ < <(stats tini)
echo
echo "| supervisor | rounds | median ms | p90 ms | min ms | max ms | median / tini |"
echo "|---|---:|---:|---:|---:|---:|---:|"
for tool in "${tools[@]}"; do
	read -r med p90 min max n < <(stats "$tool")
	printf '| %s | %d | %s | %s | %s | %s | %s |\n' "$tool" "$n" "$med" "$p90" "$min" "$max" \
		"$(awk -v a="$med" -v b="$tini_med" 'BEGIN { printf "%.2f", a / b }')"
done

awk -F'\t' '{ printf "%s\t%.3f\n", $1, $2 / 1000 }' "$tmp/data" |
	"$tmp/plot" -kind box -o "$OUT/$png" \
		-title "Stop latency: SIGTERM to exit, one sleep worker ($ROUNDS rounds, ${sched%% (*})" -y "ms"
echo
echo "plot: $OUT/$png"
