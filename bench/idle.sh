#!/usr/bin/env bash
#
# bench/idle.sh: what an idle supervisor costs, CPU and memory.
#
# Starts, side by side, supervisors whose workers do nothing:
#
#   mworker run -n 4 -- sleep 1000
#   mworker run -n 64 -- sleep 1000
#   tini -- sleep 1000
#   dumb-init sleep 1000
#
# waits until every worker runs and 3 s more, then reads each
# supervisor's CPU time (utime + stime from /proc/PID/stat, in clock ticks
# of 1/CLK_TCK s, all threads counted) at the start and at the end of
# DURATION, and its resident memory (VmRSS from /proc/PID/status) and
# thread count at the end. An idle supervisor should not wake up at all:
# the target for mworker is at most 1 tick per 10 s, and RSS at most
# 20 MiB with 64 workers.
#
# Prints a table (ticks over the run, ticks per 10 s, RSS in MiB,
# threads) and writes OUT/idle-rss.png (RSS of each).
#
# Usage: bench/idle.sh   (as root, or with tini and dumb-init installed)
#
# Environment (defaults in brackets):
#   DURATION [30]      seconds to watch
#   OUT [docs/img]     where the PNG goes
#
# Installs tini and dumb-init with apt-get when they are missing; builds
# mworker and bench/plot from this checkout; stops every supervisor it
# started when it ends, also on Ctrl-C.

set -euo pipefail

DURATION=${DURATION:-30}

. "$(dirname "$0")/lib.sh"
bench_setup tini dumb-init
OUT=${OUT:-docs/img}
mkdir -p "$OUT"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/mworker-idle-bench.XXXXXX")
pids=()
cleanup() {
	set +e
	for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

build_mworker "$tmp/mworker"
(cd bench/plot && go build -o "$tmp/plot" .) || die "go build bench/plot failed"

names=("mworker -n 4" "mworker -n 64" "tini" "dumb-init")
want=(4 64 1 1)
"$tmp/mworker" run -n 4 -- sleep 1000 2>"$tmp/mw4.log" &
pids+=($!)
"$tmp/mworker" run -n 64 -- sleep 1000 2>"$tmp/mw64.log" &
pids+=($!)
tini -- sleep 1000 2>/dev/null &
pids+=($!)
dumb-init sleep 1000 &
pids+=($!)

# sleeps PID: how many children named sleep PID's threads have.
sleeps() {
	local n=0 c
	# shellcheck disable=SC2013 # the children files hold pids separated by spaces
	for c in $(cat /proc/"$1"/task/*/children 2>/dev/null); do
		[ "$(cat /proc/"$c"/comm 2>/dev/null)" = sleep ] && n=$((n + 1))
	done
	echo "$n"
}
for i in "${!pids[@]}"; do
	deadline=$((SECONDS + 30))
	until [ "$(sleeps "${pids[$i]}")" -eq "${want[$i]}" ]; do
		[ $SECONDS -lt $deadline ] || die "${names[$i]}: ${want[$i]} workers not running after 30s"
		sleep 0.1
	done
done
sleep 3

# ticks PID: utime + stime (fields 14 and 15; the name in field 2 has no
# space here).
ticks() { awk '{ print $14 + $15 }' /proc/"$1"/stat; }
status_kb() { awk -v k="$2:" '$1 == k { print $2 }' /proc/"$1"/status; }

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(uname -sr), $(go version | awk '{ print $3 }'), CLK_TCK $(getconf CLK_TCK)"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
before=()
for p in "${pids[@]}"; do before+=("$(ticks "$p")"); done
sleep "$DURATION"
after=()
for p in "${pids[@]}"; do after+=("$(ticks "$p")"); done
echo "load average after:  $(cut -d' ' -f1-3 /proc/loadavg)"

echo
echo "| supervisor | workers | ticks in ${DURATION} s | ticks per 10 s | RSS MiB | threads |"
echo "|---|---:|---:|---:|---:|---:|"
: >"$tmp/rss"
for i in "${!pids[@]}"; do
	p=${pids[$i]}
	d=$((after[i] - before[i]))
	rss=$(status_kb "$p" VmRSS)
	printf '| %s | %d | %d | %s | %s | %s |\n' "${names[$i]}" "${want[$i]}" "$d" \
		"$(awk -v d="$d" -v s="$DURATION" 'BEGIN { printf "%.2f", d * 10 / s }')" \
		"$(awk -v k="$rss" 'BEGIN { printf "%.1f", k / 1024 }')" "$(status_kb "$p" Threads)"
	printf '%s\t%s\n' "${names[$i]}" "$(awk -v k="$rss" 'BEGIN { printf "%.2f", k / 1024 }')" >>"$tmp/rss"
done

"$tmp/plot" -kind bars -o "$OUT/idle-rss.png" \
	-title "Resident memory of an idle supervisor (VmRSS)" -y "MiB" "$tmp/rss"
echo
echo "plot: $OUT/idle-rss.png"
