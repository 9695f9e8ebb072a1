#!/usr/bin/env bash
#
# bench/worker-output.sh: what --worker-output prefix and json cost
# against inherit, in lines per second through the master.
#
# For each mode (inherit, prefix, json) and each writer, runs
#
#   mworker run -n 4 --restart on-failure --ready immediate \
#       --log-format json --worker-output MODE -- WRITER
#
# where every one of the 4 workers writes LINES lines of about 60 bytes to
# its stdout and as many to its stderr, then exits 0 (so the master exits
# once the last worker has, and with prefix or json once it has written
# what they wrote). The master's stdout and stderr are pipes read by
# "wc -l" (so inherit pays a pipe too). Writers:
#
#   bulk      cat of a file of LINES lines, to each stream: 128 KiB writes,
#             the master's best case
#   perline   perl with autoflush: one write(2) per line, alternating
#             stdout and stderr, the worst case (and the usual logger)
#
# Prints, per mode and writer, the median of RUNS runs: the wall time from
# start to the master's exit, the worker lines counted on the master's
# stdout and stderr, the lines per second (8*LINES / wall time), and the
# master's own CPU time (utime+stime of /proc/PID/stat, sampled every
# 10 ms until it exits, so at most 10 ms short).
#
# Usage: bench/worker-output.sh
#
# Environment (defaults in brackets):
#   LINES [200000]   lines per worker and stream
#   RUNS [3]         runs per mode and writer
#
# Needs perl (Debian's perl-base, always there) and Go; builds mworker
# from this checkout; stops what it started when it ends, also on Ctrl-C.

set -euo pipefail

LINES=${LINES:-200000}
RUNS=${RUNS:-3}

. "$(dirname "$0")/lib.sh"
bench_setup perl
TMP=$(mktemp -d)
MPID=
cleanup() {
	[ -n "$MPID" ] && kill -KILL "$MPID" 2>/dev/null || true
	rm -rf "$TMP"
}
trap cleanup EXIT INT TERM
build_mworker "$TMP/mworker"
TICK=$(getconf CLK_TCK)

perl -e 'printf "%s line %09d of the benchmark, some text to make it typical\n", "x", $_ for 1..$ARGV[0]' "$LINES" > "$TMP/lines"
cat > "$TMP/bulk" <<SH
#!/bin/sh
cat "$TMP/lines"
cat "$TMP/lines" >&2
SH
cat > "$TMP/perline" <<SH
#!/bin/sh
exec perl -e 'STDOUT->autoflush(1); STDERR->autoflush(1); for (1..\$ARGV[0]) { printf STDOUT "o line %09d of the benchmark, some text to make it typical\n", \$_; printf STDERR "e line %09d of the benchmark, some text to make it typical\n", \$_ }' "$LINES"
SH
chmod +x "$TMP/bulk" "$TMP/perline"

# one MODE WRITER: prints "wall_ms out_lines err_lines cpu_ticks"
one() {
	local start end cpu=0 s
	start=$(date +%s%N)
	"$TMP/mworker" run -n 4 --restart on-failure --ready immediate --log-format json \
		--worker-output "$1" -- "$TMP/$2" > >(wc -l > "$TMP/out.n") 2> >(wc -l > "$TMP/err.n") &
	MPID=$!
	while [ -r /proc/$MPID/stat ]; do
		s=$(cut -d' ' -f14,15 /proc/$MPID/stat 2>/dev/null) || break
		[ -n "$s" ] && cpu=$(( ${s% *} + ${s#* } ))
		sleep 0.01
	done
	wait "$MPID" || die "mworker run --worker-output $1 failed"
	end=$(date +%s%N)
	MPID=
	# wc finishes once the master and every worker have closed the pipes.
	local i
	for i in $(seq 100); do [ -s "$TMP/out.n" ] && [ -s "$TMP/err.n" ] && break; sleep 0.05; done
	echo "$(( (end - start) / 1000000 )) $(cat "$TMP/out.n") $(cat "$TMP/err.n") $cpu"
	rm -f "$TMP/out.n" "$TMP/err.n"
}

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

printf "%-8s %-8s %9s %11s %11s %12s %9s\n" mode writer wall_ms stdout_n stderr_n lines/s cpu_ms
for writer in bulk perline; do
	for mode in inherit prefix json; do
		: > "$TMP/runs"
		for r in $(seq "$RUNS"); do one "$mode" "$writer" >> "$TMP/runs"; done
		wall=$(cut -d' ' -f1 "$TMP/runs" | median)
		outn=$(cut -d' ' -f2 "$TMP/runs" | median)
		errn=$(cut -d' ' -f3 "$TMP/runs" | median)
		cpu=$(cut -d' ' -f4 "$TMP/runs" | median)
		printf "%-8s %-8s %9d %11d %11d %12d %9d\n" "$mode" "$writer" "$wall" "$outn" "$errn" \
			$(( 8 * LINES * 1000 / wall )) $(( cpu * 1000 / TICK ))
	done
done
echo "($LINES lines per worker and stream, 4 workers; stderr_n includes the master's own log lines; median of $RUNS runs)"
