#!/usr/bin/env bash
#
# bench/orphans.sh: how fast orphans are reaped, mworker against tini.
#
# A worker leaves ORPHANS orphans behind and they all exit at once; the
# figure is the time until the supervisor has reaped every one of them
# (no zombie left among its children). bench/reaptime (a Go program)
# does the work, for each supervisor in turn:
#
#   mworker run -- reaptime -worker ...
#   tini -s -- reaptime -worker ...   (-s: tini as a subreaper)
#
# The worker forks a spawner, which forks ORPHANS `cat` processes and
# exits; the cats are reparented to the supervisor (a subreaper). They
# all block reading one FIFO; reaptime closes its writing end (t0), learns
# when the last cat has exited from a second FIFO they all hold open
# (end-of-file once the last one is gone), and polls the supervisor's
# /proc/PID/task/*/children every 2 ms until only the worker is left.
#
#   exited   t0 to the last orphan's exit: the kernel's work, the same for
#            every supervisor
#   reaped   t0 to no orphan left, zombies included
#   lag      reaped - exited: what the supervisor adds
#
# The target for mworker is reaped <= 2 s after the orphans exit, with
# 10,000 orphans.
#
# Prints a table (median over ROUNDS rounds, with the load average) and
# writes OUT/orphans.png (orphans left, zombies included, against time
# from t0, in the first round of each supervisor).
#
# Usage: bench/orphans.sh   (as root, or with tini installed; needs
# ORPHANS + a few hundred free pids: check /proc/sys/kernel/pid_max and
# ulimit -u)
#
# Environment (defaults in brackets):
#   ORPHANS [10000]    orphans per round
#   ROUNDS [3]         rounds per supervisor (about 25 s each on 2 cores)
#   OUT [docs/img]     where the PNG goes
#
# Installs tini with apt-get when it is missing; builds mworker,
# bench/reaptime and bench/plot from this checkout. Bounded: reaptime
# gives up after 120 s at each stage and stops the supervisor (SIGTERM,
# then SIGKILL after 20 s).

set -euo pipefail

ORPHANS=${ORPHANS:-10000}
ROUNDS=${ROUNDS:-3}

. "$(dirname "$0")/lib.sh"
bench_setup tini
OUT=${OUT:-docs/img}
mkdir -p "$OUT"
limit=$(ulimit -u)
[ "$limit" = unlimited ] || [ "$limit" -gt $((ORPHANS + 500)) ] || die "ulimit -u is $limit, too low for $ORPHANS orphans: raise it or set ORPHANS"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/mworker-orphans-bench.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM

build_mworker "$tmp/mworker"
go build -o "$tmp/reaptime" ./bench/reaptime || die "go build ./bench/reaptime failed"
(cd bench/plot && go build -o "$tmp/plot" .) || die "go build bench/plot failed"

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(uname -sr), $(go version | awk '{ print $3 }')"
echo "tini: $(tini --version 2>&1 | head -1)"

tools=(mworker tini)
supervisor_of() {
	case $1 in
	mworker) echo "$tmp/mworker run --" ;;
	tini) echo "tini -s --" ;;
	esac
}

: >"$tmp/results"
: >"$tmp/plot.tsv"
for ((r = 0; r < ROUNDS; r++)); do
	for tool in "${tools[@]}"; do
		load=$(cut -d' ' -f1 /proc/loadavg)
		series=""
		[ "$r" -eq 0 ] && series="$tmp/series-$tool"
		# shellcheck disable=SC2046 # the command is split on purpose
		line=$("$tmp/reaptime" -n "$ORPHANS" ${series:+-series "$series"} -- $(supervisor_of "$tool") 2>>"$tmp/$tool.log") ||
			die "reaptime failed for $tool: $(tail -3 "$tmp/$tool.log")"
		echo "  $tool round $((r + 1)): $line (orphans, exited ms, reaped ms, lag ms), load $load" >&2
		printf '%s\t%s\t%s\n' "$tool" "$line" "$load" >>"$tmp/results"
	done
done
for tool in "${tools[@]}"; do
	awk -F'\t' -v t="$tool" '{ printf "%s\t%s\t%s\n", t, $1, $2 }' "$tmp/series-$tool" >>"$tmp/plot.tsv"
done

# results: tool orphans exited reaped lag load
echo
echo "| supervisor | orphans | rounds | exited ms (median) | reaped ms (median) | lag ms (median) | lag ms (max) | load avg |"
echo "|---|---:|---:|---:|---:|---:|---:|---|"
for tool in "${tools[@]}"; do
	awk -F'\t' -v t="$tool" '$1 == t' "$tmp/results" | awk -F'\t' '
		function med(a, n,   i, j, x) {
			for (i = 2; i <= n; i++) { x = a[i]; for (j = i - 1; j > 0 && a[j] > x; j--) a[j + 1] = a[j]; a[j + 1] = x }
			return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
		}
		{ t = $1; o = $2; e[NR] = $3; d[NR] = $4; l[NR] = $5; if ($5 > mx) mx = $5; loads = loads (NR > 1 ? ", " : "") $6 }
		END { printf "| %s | %d | %d | %.0f | %.0f | %.0f | %.0f | %s |\n", t, o, NR, med(e, NR), med(d, NR), med(l, NR), mx, loads }'
done

"$tmp/plot" -kind lines -o "$OUT/orphans.png" \
	-title "$ORPHANS orphans exit at t = 0: how many are left (zombies included)" \
	-x "ms since they were told to exit" -y "orphans left" "$tmp/plot.tsv"
echo
echo "plot: $OUT/orphans.png"
