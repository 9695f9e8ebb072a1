#!/usr/bin/env bash
#
# bench/soak.sh: a bounded soak of one master under everything at once.
#
# Runs `mworker run -n WORKERS --listen 127.0.0.1:PORT --ready notify
# --control SOCK -- mworker demo-worker` for DURATION while, at the same
# time:
#
#   - wrk sends traffic, a fresh connection per request (Connection: close),
#   - `mworker status` is asked every STATUS_EVERY seconds (100 ms),
#   - `mworker reload` runs every RELOAD_EVERY seconds (1 s),
#   - a random current worker gets KILL_SIGNAL every KILL_EVERY seconds (3 s),
#
# and prints, at the start and at the end: the master's open fds, RSS,
# threads and goroutines; and over the run: requests and failed requests
# (wrk's non-2xx/3xx responses and socket errors), reloads and failed
# reloads, status calls and unanswered ones, workers signalled.
#
# KILL_SIGNAL defaults to TERM: the demo worker drains and exits 0, and
# `--restart always` starts a new one in its slot. With KILL (SIGKILL) the
# requests that worker had accepted and not answered are lost by nature,
# so wrk counts them as failed: that measures the worker, not mworker.
# Reloads and kills take turns in one loop (a kill right after a reload
# has answered, every KILL_EVERY seconds): a worker the soak signals while
# a reload retires it would get a second stop signal, which the demo worker
# (as many servers) takes as "exit now, cut what is in flight". The first
# soak counted 4 such failed requests in 2.4 million.
#
# Usage: bench/soak.sh [-d DURATION]   (root, or with wrk installed)
#
# Environment (defaults in brackets):
#   DURATION [10m]       how long the soak runs (also -d 2m; s/m/h suffix)
#   WORKERS [4]          workers per generation
#   PORT [18090]         the master's port on 127.0.0.1
#   STATUS_EVERY [0.1]   seconds between status calls
#   RELOAD_EVERY [1]     seconds between reloads (start to start)
#   KILL_EVERY [3]       seconds between killed workers
#   KILL_SIGNAL [TERM]   what the killed worker gets
#   THREADS [2], CONNECTIONS [16]   wrk's settings
#   GOGC                 passed to the master when set (GOGC=1 compresses
#                        hours of garbage collection into minutes)
#
# Exit status: 0 when nothing failed (0 failed requests, reloads and
# status calls, the master alive at the end), 1 otherwise.
#
# Everything runs on loopback and is bounded in time; every process the
# script starts is stopped when it ends, also on Ctrl-C.

set -euo pipefail

DURATION=${DURATION:-10m}
while getopts d: opt; do
	case $opt in
	d) DURATION=$OPTARG ;;
	*) echo "usage: bench/soak.sh [-d DURATION]" >&2; exit 2 ;;
	esac
done
WORKERS=${WORKERS:-4}
PORT=${PORT:-18090}
STATUS_EVERY=${STATUS_EVERY:-0.1}
RELOAD_EVERY=${RELOAD_EVERY:-1}
KILL_EVERY=${KILL_EVERY:-3}
KILL_SIGNAL=${KILL_SIGNAL:-TERM}
THREADS=${THREADS:-2}
CONNECTIONS=${CONNECTIONS:-16}

. "$(dirname "$0")/lib.sh"
bench_setup wrk

case $DURATION in
*h) secs=$((${DURATION%h} * 3600)) ;;
*m) secs=$((${DURATION%m} * 60)) ;;
*s) secs=${DURATION%s} ;;
*[!0-9]* | "") die "DURATION $DURATION: give seconds, or a number with s, m or h (e.g. 10m)" ;;
*) secs=$DURATION ;;
esac
[ "$secs" -gt 0 ] || die "DURATION $DURATION: must be positive"

work=$(mktemp -d "${TMPDIR:-/tmp}/mworker-soak.XXXXXX")
mw="$work/mworker"
ctl="$work/control.sock"
mw_pid=""
pids=()

cleanup() {
	set +e
	touch "$work/stop"
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
	[ -n "$mw_pid" ] && kill -TERM "$mw_pid" 2>/dev/null && wait "$mw_pid" 2>/dev/null
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

build_mworker "$mw"

now_ns() { date +%s%N; }

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

status_json() { "$mw" status --control "$ctl" --json --timeout 2s 2>/dev/null; }

settled() {
	local js
	js=$(status_json) || return 1
	[ "$(grep -o '"current":true' <<<"$js" | wc -l)" -eq "$WORKERS" ] &&
		[ "$(grep -o '"ready":true' <<<"$js" | wc -l)" -eq "$WORKERS" ]
}

# sample LABEL: the master's fds, RSS, threads and goroutines.
sample() {
	local fds rss threads gor js
	fds=$(ls "/proc/$mw_pid/fd" | wc -l)
	rss=$(awk '/^VmRSS:/ { printf "%.1f MiB", $2 / 1024 }' "/proc/$mw_pid/status")
	threads=$(awk '/^Threads:/ { print $2 }' "/proc/$mw_pid/status")
	js=$(status_json || true)
	gor=$(grep -o '"goroutines":[0-9]*' <<<"$js" | cut -d: -f2 || true)
	printf '| %-5s | %4s | %9s | %7s | %10s |\n' "$1" "$fds" "$rss" "$threads" "${gor:-?}"
}

# every SECONDS FILE COMMAND...: runs COMMAND every SECONDS (start to
# start) until $work/stop exists; appends "ok" or "fail" to FILE.
every() {
	local interval_ns t0 left file=$2
	interval_ns=$(awk -v s="$1" 'BEGIN { printf "%d", s * 1e9 }')
	shift 2
	while [ ! -e "$work/stop" ]; do
		t0=$(now_ns)
		if "$@" >/dev/null 2>>"$file.err"; then echo ok >>"$file"; else echo fail >>"$file"; fi
		left=$((t0 + interval_ns - $(now_ns)))
		[ "$left" -gt 0 ] && sleep "$(awk -v n="$left" 'BEGIN { printf "%.3f", n / 1e9 }')"
	done
}

kill_one() {
	local js pid
	js=$(status_json) || return 1
	pid=$(grep -o '"pid":[0-9]*,"generation":[0-9]*,"slot":[0-9]*,"current":true' <<<"$js" |
		cut -d, -f1 | cut -d: -f2 | shuf -n 1 || true)
	[ -n "$pid" ] || return 0 # a reload's moment with no current worker listed: skip
	kill "-$KILL_SIGNAL" "$pid" 2>/dev/null # gone already when a reload replaced it: not counted
}

# reload_then_kill: a reload every RELOAD_EVERY seconds (start to start),
# appending "ok" or "fail" to $work/reloads; once KILL_EVERY seconds have
# passed since the last kill, a kill right after the reload's answer, to
# $work/kills; until $work/stop exists.
reload_then_kill() {
	local interval_ns kill_ns t0 left last_kill
	interval_ns=$(awk -v s="$RELOAD_EVERY" 'BEGIN { printf "%d", s * 1e9 }')
	kill_ns=$(awk -v s="$KILL_EVERY" 'BEGIN { printf "%d", s * 1e9 }')
	last_kill=$(now_ns)
	while [ ! -e "$work/stop" ]; do
		t0=$(now_ns)
		if "$mw" reload --control "$ctl" --timeout 60s >/dev/null 2>>"$work/reloads.err"; then
			echo ok >>"$work/reloads"
		else
			echo fail >>"$work/reloads"
		fi
		if [ $(($(now_ns) - last_kill)) -ge "$kill_ns" ]; then
			last_kill=$(now_ns)
			if kill_one 2>>"$work/kills.err"; then echo ok >>"$work/kills"; else echo fail >>"$work/kills"; fi
		fi
		left=$((t0 + interval_ns - $(now_ns)))
		[ "$left" -gt 0 ] && sleep "$(awk -v n="$left" 'BEGIN { printf "%.3f", n / 1e9 }')"
	done
}

port_free "$PORT" || die "127.0.0.1:$PORT is in use: set PORT"
env ${GOGC:+GOGC=$GOGC} "$mw" run -n "$WORKERS" --listen "127.0.0.1:$PORT" --ready notify \
	--control "$ctl" -- "$mw" demo-worker >>"$work/mworker.log" 2>&1 &
mw_pid=$!
deadline=$(($(now_ns) + 20000000000))
until settled; do
	[ "$(now_ns)" -lt "$deadline" ] || die "the master's $WORKERS workers were not ready in 20 s: $(tail -5 "$work/mworker.log")"
	sleep 0.05
done

echo "machine: $(nproc) cores, $(uname -sr), $(go version | awk '{ print $3, $4 }'), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "mworker: $("$mw" version); soak of ${secs}s, $WORKERS workers, GOGC=${GOGC:-default}"
echo
echo "| when  |  fds |       RSS | threads | goroutines |"
echo "|-------|------|-----------|---------|------------|"
sample start

touch "$work/status" "$work/reloads" "$work/kills"
every "$STATUS_EVERY" "$work/status" status_json &
pids+=($!)
reload_then_kill &
pids+=($!)
wrk -t"$THREADS" -c"$CONNECTIONS" -d"${secs}s" -H "Connection: close" "http://127.0.0.1:$PORT/" >"$work/wrk.out" 2>&1 &
wrk_pid=$!
pids+=($wrk_pid)
wait "$wrk_pid" || true
touch "$work/stop"
for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
pids=()

# Let the last reload and restart settle before the closing sample.
deadline=$(($(now_ns) + 30000000000))
until settled || [ "$(now_ns)" -ge "$deadline" ]; do sleep 0.05; done
alive=yes
kill -0 "$mw_pid" 2>/dev/null || alive=no
[ "$alive" = yes ] && sample end
echo

requests=$(awk '/ requests in / { print $1 }' "$work/wrk.out")
non2xx=$(awk -F': *' '/Non-2xx or 3xx responses/ { print $2 }' "$work/wrk.out")
sock=$(awk '/Socket errors:/ { gsub(",", ""); print $4 + $6 + $8 + $10 }' "$work/wrk.out")
failed=$((${non2xx:-0} + ${sock:-0}))
count() { grep -c "^$1\$" "$2" || true; }
st_ok=$(count ok "$work/status")
st_bad=$(count fail "$work/status")
rl_ok=$(count ok "$work/reloads")
rl_bad=$(count fail "$work/reloads")
kills=$(count ok "$work/kills")
echo "| requests | failed | reloads | failed reloads | status calls | unanswered | workers signalled | master alive |"
echo "|----------|--------|---------|----------------|--------------|------------|-------------------|--------------|"
printf '| %8s | %6s | %7s | %14s | %12s | %10s | %17s | %12s |\n' \
	"${requests:-?}" "$failed" "$rl_ok" "$rl_bad" "$((st_ok + st_bad))" "$st_bad" "$kills" "$alive"
for f in reloads status kills; do
	if [ -s "$work/$f.err" ]; then
		echo "$f errors (most frequent):"
		sort "$work/$f.err" | uniq -c | sort -rn | head -5
	fi
done
grep -E 'Socket errors|Non-2xx' "$work/wrk.out" || true
[ "$alive" = yes ] && [ "$failed" -eq 0 ] && [ "$rl_bad" -eq 0 ] && [ "$st_bad" -eq 0 ]
