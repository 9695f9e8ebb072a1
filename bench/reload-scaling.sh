#!/usr/bin/env bash
#
# bench/reload-scaling.sh: how the reload round trip grows with workers.
#
# For each worker count N in COUNTS and each mode in MODES it starts
#
#   direct:  mworker run -n N --ready immediate --control SOCK -- sleep 1000
#   listen:  the same with --listen unix://PATH
#
# (through `env --default-signal=INT,QUIT`: bash starts background jobs
# with SIGINT and SIGQUIT ignored, and mworker would then start every
# worker through its trampoline to give that back). In direct mode the
# master forks and execs `sleep` itself; with a listener every worker
# starts through the trampoline, `/bin/sh -c` setting LISTEN_PID to its
# own pid before it execs `sleep`: one more exec per worker.
#
# and times `mworker reload --control SOCK` (from the command's start to
# its exit 0, with bash's $EPOCHREALTIME, which costs no fork) RELOADS
# times, each once the previous reload has settled (N workers, all
# current and ready, none old). The round trip covers the client's start,
# the master's re-exec (a new Go runtime, the same pid), the N new
# workers' fork+exec (with listeners, each through the trampoline), and
# the answer; the old workers are told to stop after it.
#
# Next to it, two baselines measured the same way at each N:
#   floor   bench/forkfloor: a Go process forks and execs N bare
#           `sleep 1000` in their own process groups, one after the other
#           (syscall.ForkExec), then kills and reaps them outside the
#           timing: the least a reload of N workers must cost.
#   status  `mworker status --control SOCK`: the client's start and one
#           request to the master, the part of the round trip that does
#           not depend on N.
#
# Targets for the round trip: at most linear growth, at most 250 ms at 4
# workers, and within 20 ms + floor.
#
# Prints a table and writes OUT/reload-scaling.png (median round trip,
# floor and floor + 20 ms against N, log-log).
#
# Usage: bench/reload-scaling.sh
#
# Environment (defaults in brackets):
#   COUNTS ["1 4 16 64 256"]  worker counts
#   MODES ["direct listen"]   see above
#   RELOADS [30]              reloads timed at each count
#   RELOADS_256 [20]          at 256 workers and more
#   OUT [docs/img]            where the PNG goes
#
# Needs only Go; builds mworker, bench/forkfloor and bench/plot from this
# checkout; stops the master it started when it ends, also on Ctrl-C.
# Every wait is bounded (60 s).

set -euo pipefail

COUNTS=${COUNTS:-1 4 16 64 256}
MODES=${MODES:-direct listen}
RELOADS=${RELOADS:-30}
RELOADS_256=${RELOADS_256:-20}

. "$(dirname "$0")/lib.sh"
bench_setup
OUT=${OUT:-docs/img}
mkdir -p "$OUT"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/mworker-reload-scaling.XXXXXX")
mw="$tmp/mworker"
ctl="$tmp/control.sock"
mw_pid=""
cleanup() {
	set +e
	[ -n "$mw_pid" ] && kill -TERM "$mw_pid" 2>/dev/null && wait "$mw_pid" 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

build_mworker "$mw"
go build -o "$tmp/forkfloor" ./bench/forkfloor || die "go build ./bench/forkfloor failed"
(cd bench/plot && go build -o "$tmp/plot" .) || die "go build bench/plot failed"

# usec: $EPOCHREALTIME in microseconds.
usec() { local t=${EPOCHREALTIME/./}; echo $((10#$t)); }

# settled N: N workers, all current and ready, none old.
settled() {
	local js
	js=$("$mw" status --control "$ctl" --json 2>/dev/null) || return 1
	[ "$(grep -o '"slot":' <<<"$js" | wc -l)" -eq "$1" ] &&
		[ "$(grep -o '"current":true' <<<"$js" | wc -l)" -eq "$1" ] &&
		[ "$(grep -o '"ready":true' <<<"$js" | wc -l)" -eq "$1" ]
}

wait_settled() {
	local deadline=$((SECONDS + 60))
	until settled "$1"; do
		[ $SECONDS -lt $deadline ] || die "$1 workers not settled after 60s (log: $tmp/mworker.log)"
		sleep 0.05
	done
}

# median: of the numbers on stdin (microseconds), in ms; then min and max.
median() {
	sort -n | awk '
		{ v[NR] = $1 }
		END {
			med = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
			printf "%.1f %.1f %.1f\n", med / 1000, v[1] / 1000, v[NR] / 1000
		}'
}

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(uname -sr), $(go version | awk '{ print $3 }')"
rows=()
: >"$tmp/plot.tsv"
for n in $COUNTS; do
	r=$RELOADS
	[ "$n" -ge 256 ] && r=$RELOADS_256
	"$tmp/forkfloor" -n "$n" -rounds "$r" >"$tmp/ff" || die "forkfloor -n $n failed"
	read -r fmed _ _ < <(median <"$tmp/ff")
	printf 'fork+exec floor (median)\t%d\t%s\n' "$n" "$fmed" >>"$tmp/plot.tsv"
	printf 'floor + 20 ms (target)\t%d\t%s\n' "$n" "$(awk -v a="$fmed" 'BEGIN { print a + 20 }')" >>"$tmp/plot.tsv"
	for mode in $MODES; do
	load0=$(cut -d' ' -f1 /proc/loadavg)
	echo "$n workers, $mode: $r reloads" >&2
	listen=()
	[ "$mode" = listen ] && listen=(--listen "unix://$tmp/listen-$n.sock")
	env --default-signal=INT,QUIT "$mw" run -n "$n" "${listen[@]}" --ready immediate --control "$ctl" -- sleep 1000 2>>"$tmp/mworker.log" &
	mw_pid=$!
	wait_settled "$n"
	: >"$tmp/rt"
	: >"$tmp/st"
	for ((i = 0; i < r; i++)); do
		t0=$(usec)
		"$mw" reload --control "$ctl" >/dev/null || die "reload $i at $n workers failed (log: $tmp/mworker.log)"
		t1=$(usec)
		echo $((t1 - t0)) >>"$tmp/rt"
		wait_settled "$n"
		t0=$(usec)
		"$mw" status --control "$ctl" >/dev/null || die "status at $n workers failed"
		t1=$(usec)
		echo $((t1 - t0)) >>"$tmp/st"
	done
	kill -TERM "$mw_pid"
	wait "$mw_pid" || true
	mw_pid=""
	load1=$(cut -d' ' -f1 /proc/loadavg)
	read -r med min max < <(median <"$tmp/rt")
	read -r smed _ _ < <(median <"$tmp/st")
	rows+=("$(printf '| %s | %d | %d | %s | %s | %s | %s | %s | %s | %s | %s-%s |' "$mode" "$n" "$r" "$med" "$min" "$max" "$fmed" "$smed" \
		"$(awk -v a="$med" -v b="$fmed" 'BEGIN { printf "%.1f", a - b }')" \
		"$(awk -v a="$med" -v b="$n" 'BEGIN { printf "%.2f", a / b }')" "$load0" "$load1")")
	printf 'mworker reload, %s (median)\t%d\t%s\n' "$mode" "$n" "$med" >>"$tmp/plot.tsv"
	done
done

echo
echo "| mode | workers | reloads | median ms | min ms | max ms | floor ms | status ms | median - floor ms | median ms per worker | load avg |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
printf '%s\n' "${rows[@]}" | sort -t'|' -k2,2 -s

sort -t$'\t' -k1,1r -s "$tmp/plot.tsv" | "$tmp/plot" -kind lines -logx -logy -xticks "$(tr ' ' ',' <<<"$COUNTS")" \
	-o "$OUT/reload-scaling.png" -title "Reload round trip against workers (--ready immediate)" \
	-x "workers" -y "ms"
echo
echo "plot: $OUT/reload-scaling.png"
