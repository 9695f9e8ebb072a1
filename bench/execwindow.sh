#!/usr/bin/env bash
#
# bench/execwindow.sh: how long a reload leaves the master exposed.
#
# A reload replaces the master's image with execve (same pid). From the
# execve until the new image has called signal.Notify for SIGTERM, SIGINT
# and SIGQUIT, one of those signals would end the master (docs/signals.md,
# "The re-exec window"). Every re-exec'd master logs the window at debug
# level:
#
#   re-exec window: execve to signal.Notify  window_us=... init_us=... all_us=...
#
# window: execve to the urgent signals caught; init: execve to osadapter's
# init starting (the kernel's execve, the Go runtime, the packages mworker
# depends on); all: execve to every signal caught.
#
# This script starts
#
#   mworker run -n WORKERS --ready immediate --reexec always --log-level debug --log-format json --control SOCK -- sleep 1000
#
# runs RELOADS `mworker reload` in a row (each once the previous one has
# answered), reads those lines from the master's log and prints min,
# median, p90 and max of each figure in ms, and writes
# OUT/exec-window.png, a box plot of the three.
#
# Usage: bench/execwindow.sh
#
# Environment (defaults in brackets):
#   RELOADS [40]     reloads
#   WORKERS [2]      workers per generation
#   OUT [docs/img]   where the PNG goes
#
# Needs only Go; builds mworker as a release is built (bench/lib.sh) and
# stops the master it started when it ends, also on Ctrl-C. Every wait is
# bounded.

set -euo pipefail

RELOADS=${RELOADS:-40}
WORKERS=${WORKERS:-2}

. "$(dirname "$0")/lib.sh"
bench_setup
OUT=${OUT:-docs/img}
mkdir -p "$OUT"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/mworker-execwindow.XXXXXX")
mpid=
cleanup() {
	if [ -n "$mpid" ] && kill -0 "$mpid" 2>/dev/null; then
		kill -TERM "$mpid" 2>/dev/null || true
		for _ in $(seq 1 100); do kill -0 "$mpid" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$mpid" 2>/dev/null || true
	fi
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

build_mworker "$tmp/mworker"
(cd bench/plot && go build -o "$tmp/plot" .) || die "go build bench/plot failed"
sock=$tmp/ctl.sock

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(uname -sr), $(go version | awk '{ print $3 }')"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"

"$tmp/mworker" run -n "$WORKERS" --ready immediate --reexec always --log-level debug --log-format json --control "$sock" -- sleep 1000 2>"$tmp/log" &
mpid=$!
for i in $(seq 1 100); do
	"$tmp/mworker" status --control "$sock" >/dev/null 2>&1 && break
	[ "$i" -lt 100 ] || die "the master did not answer on $sock within 10 s"
	sleep 0.1
done
for ((i = 1; i <= RELOADS; i++)); do
	"$tmp/mworker" reload --control "$sock" --timeout 60s >/dev/null || die "reload $i failed; log in $tmp/log"
done
echo "load average after:  $(cut -d' ' -f1-3 /proc/loadavg)"

n=$(grep -c '"re-exec window' "$tmp/log" || true)
[ "$n" -eq "$RELOADS" ] || die "$n window lines for $RELOADS reloads"

# stats FIELD: min median p90 max in ms
stats() {
	grep '"re-exec window' "$tmp/log" | sed -E "s/.*\"$1\":([0-9]+).*/\1/" | sort -n | awk '
		{ v[NR] = $1 }
		END {
			med = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
			printf "%.1f | %.1f | %.1f | %.1f", v[1] / 1000, med / 1000, v[int(NR * 0.9 + 0.999999)] / 1000, v[NR] / 1000
		}'
}
echo
echo "$RELOADS reloads, $WORKERS workers"
echo
echo "| | min ms | median ms | p90 ms | max ms |"
echo "|---|---:|---:|---:|---:|"
echo "| window (execve to SIGTERM, SIGINT, SIGQUIT caught) | $(stats window_us) |"
echo "| before init (execve to osadapter's init) | $(stats init_us) |"
echo "| all (execve to every signal caught) | $(stats all_us) |"

for f in window init all; do
	grep '"re-exec window' "$tmp/log" | sed -E "s/.*\"${f}_us\":([0-9]+).*/\1/" |
		awk -v f="$f" '{ printf "%s\t%.3f\n", f, $1 / 1000 }'
done | "$tmp/plot" -kind box -o "$OUT/exec-window.png" \
	-title "Re-exec window: execve to signals caught ($RELOADS reloads)" -y "ms"
echo
echo "plot: $OUT/exec-window.png"
