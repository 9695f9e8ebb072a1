#!/usr/bin/env bash
#
# bench/reload.sh: reloads under load, mworker against HAProxy's
# master-worker mode, side by side in one run on one machine.
#
# 1. Installs wrk and haproxy from Debian (apt-get) when they are missing,
#    and builds mworker from this checkout.
# 2. mworker: `mworker run -n 4 --listen 127.0.0.1:MW_PORT --ready notify
#    --control SOCK -- mworker demo-worker` under wrk, four runs of
#    DURATION each: Connection: close with `mworker reload` every
#    INTERVAL, the same without reloads, keep-alive with reloads,
#    keep-alive without.
# 3. HAProxy (whatever Debian ships; its version is printed) in
#    master-worker mode, `haproxy -W -f CFG` answering every request with
#    `http-request return status 200` on HA_PORT, reloaded with SIGUSR2
#    every INTERVAL, the same four runs.
# 4. Prints one table: tool, mode, reloads, requests, failed (wrk's
#    non-2xx/3xx responses + socket errors), req/s.
# 5. The median round trip of `mworker reload` (the command, from start
#    to its exit 0) with WORKERS workers, for each --ready mode in
#    ROUNDTRIP_READY (`immediate`, ready at once; `default`, no --ready
#    option: the 1 s the default makes a new generation stay up), over
#    ROUNDTRIPS reloads each, each started once the previous one has
#    settled (no old worker left).
#
# Everything runs on loopback and is bounded in time; every process the
# script starts is stopped when it ends, also on Ctrl-C.
#
# Usage: bench/reload.sh   (root, or with wrk and haproxy installed)
#
# Environment (defaults in brackets):
#   DURATION [10s]     length of each wrk run
#   INTERVAL [0.2]     seconds from the start of one reload to the next
#   WORKERS [4]        mworker workers per generation
#   THREADS [2]        wrk threads
#   CONNECTIONS [32]   wrk connections
#   MW_PORT [18080]    mworker's port on 127.0.0.1
#   HA_PORT [18081]    HAProxy's port on 127.0.0.1
#   ROUNDTRIPS [30]    reloads timed for the round trip, per mode
#   ROUNDTRIP_READY ["immediate default"]  --ready modes of the round trip
#                      (`default` passes no --ready)
#   TOOLS ["mworker haproxy"]  which halves to run (the round trip belongs
#                      to mworker); `roundtrip` runs only the round trip,
#                      without wrk or HAProxy
#
# A mworker reload is counted when `mworker reload` exits 0 (the new
# generation is ready); one that exits 1 is counted as failed and its
# reason printed. A HAProxy reload is counted when SIGUSR2 is sent: HAProxy
# does not tell the sender whether the reload worked.

set -euo pipefail

DURATION=${DURATION:-10s}
INTERVAL=${INTERVAL:-0.2}
WORKERS=${WORKERS:-4}
THREADS=${THREADS:-2}
CONNECTIONS=${CONNECTIONS:-32}
MW_PORT=${MW_PORT:-18080}
HA_PORT=${HA_PORT:-18081}
ROUNDTRIPS=${ROUNDTRIPS:-30}
ROUNDTRIP_READY=${ROUNDTRIP_READY:-immediate default}
TOOLS=${TOOLS:-mworker haproxy}

. "$(dirname "$0")/lib.sh"
if [ "$TOOLS" = roundtrip ]; then
	bench_setup
else
	bench_setup wrk haproxy
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/mworker-reload-bench.XXXXXX")
mw="$work/mworker"
ctl="$work/control.sock"
mw_pid=""
ha_pid=""
loop_pid=""
wrk_pid=""

cleanup() {
	set +e
	touch "$work/stop"
	[ -n "$wrk_pid" ] && kill "$wrk_pid" 2>/dev/null && wait "$wrk_pid" 2>/dev/null
	[ -n "$loop_pid" ] && kill "$loop_pid" 2>/dev/null && wait "$loop_pid" 2>/dev/null
	[ -n "$mw_pid" ] && kill -TERM "$mw_pid" 2>/dev/null && wait "$mw_pid" 2>/dev/null
	[ -n "$ha_pid" ] && kill -TERM "$ha_pid" 2>/dev/null && wait "$ha_pid" 2>/dev/null
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

build_mworker "$mw"

now_ns() { date +%s%N; }

# wait_until SECONDS WHAT COMMAND...: polls COMMAND every 50 ms.
wait_until() {
	local secs=$1 what=$2
	shift 2
	local deadline=$(($(now_ns) + secs * 1000000000))
	until "$@"; do
		[ "$(now_ns)" -lt "$deadline" ] || die "timed out after ${secs}s waiting for $what"
		sleep 0.05
	done
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# --- mworker -------------------------------------------------------------

# settled: exactly WORKERS workers, all current and ready (no generation
# starting, none draining).
settled() {
	local js
	js=$("$mw" status --control "$ctl" --json 2>/dev/null) || return 1
	[ "$(grep -o '"slot":' <<<"$js" | wc -l)" -eq "$WORKERS" ] &&
		[ "$(grep -o '"current":true' <<<"$js" | wc -l)" -eq "$WORKERS" ] &&
		[ "$(grep -o '"ready":true' <<<"$js" | wc -l)" -eq "$WORKERS" ]
}

# start_mworker READY-MODE: "default" passes no --ready.
start_mworker() {
	port_free "$MW_PORT" || die "127.0.0.1:$MW_PORT is in use: set MW_PORT"
	local ready=(--ready "$1")
	[ "$1" = default ] && ready=()
	"$mw" run -n "$WORKERS" --listen "127.0.0.1:$MW_PORT" "${ready[@]}" --control "$ctl" \
		-- "$mw" demo-worker >>"$work/mworker.log" 2>&1 &
	mw_pid=$!
	wait_until 20 "mworker's $WORKERS workers (log: $work/mworker.log)" settled
}

stop_mworker() {
	kill -TERM "$mw_pid"
	wait "$mw_pid" || true
	mw_pid=""
}

# --- reload loops ----------------------------------------------------------

# reload_loop COMMAND...: runs COMMAND every INTERVAL seconds (from start to
# start; a reload that takes longer delays the next) until $work/stop
# exists, and appends "ok" or "fail" for each to $work/reloads.
reload_loop() {
	local interval_ns t0 left
	interval_ns=$(awk -v s="$INTERVAL" 'BEGIN { printf "%d", s * 1e9 }')
	while [ ! -e "$work/stop" ]; do
		t0=$(now_ns)
		if "$@" >/dev/null 2>>"$work/reload-errors"; then
			echo ok >>"$work/reloads"
		else
			echo fail >>"$work/reloads"
		fi
		left=$((t0 + interval_ns - $(now_ns)))
		[ "$left" -gt 0 ] && sleep "$(awk -v n="$left" 'BEGIN { printf "%.3f", n / 1e9 }')"
	done
}

# --- wrk -------------------------------------------------------------------

rows=()
details=()

# bench TOOL MODE RELOADS PORT [RELOAD-COMMAND...]: one wrk run, with the
# reload loop running COMMAND when RELOADS is "yes".
bench() {
	local tool=$1 mode=$2 reloading=$3 port=$4
	shift 4
	local hdr=() out="$work/wrk.out"
	[ "$mode" = close ] && hdr=(-H "Connection: close")
	rm -f "$work/stop" "$work/reloads" "$work/reload-errors"
	touch "$work/reloads" "$work/reload-errors"
	if [ "$reloading" = yes ]; then
		reload_loop "$@" &
		loop_pid=$!
	fi
	# In the background, so that a signal to the script stops it at once.
	wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" "${hdr[@]}" "http://127.0.0.1:$port/" >"$out" 2>&1 &
	wrk_pid=$!
	wait "$wrk_pid" || true
	wrk_pid=""
	touch "$work/stop"
	if [ -n "$loop_pid" ]; then
		wait "$loop_pid" || true
		loop_pid=""
	fi

	local requests rps non2xx sock failed ok bad reloads
	requests=$(awk '/ requests in / { print $1 }' "$out")
	rps=$(awk '/^Requests\/sec:/ { printf "%.0f", $2 }' "$out")
	non2xx=$(awk -F': *' '/Non-2xx or 3xx responses/ { print $2 }' "$out")
	# Socket errors: connect A, read B, write C, timeout D
	sock=$(awk '/Socket errors:/ { gsub(",", ""); print $4 + $6 + $8 + $10 }' "$out")
	[ -n "$requests" ] && [ -n "$rps" ] || die "cannot read wrk's output:$(printf '\n%s' "$(cat "$out")")"
	failed=$((${non2xx:-0} + ${sock:-0}))
	ok=$(grep -c '^ok$' "$work/reloads" || true)
	bad=$(grep -c '^fail$' "$work/reloads" || true)
	reloads=$ok
	[ "$bad" -gt 0 ] && reloads="$ok (+$bad failed)"
	[ "$reloading" = yes ] || reloads=0
	rows+=("$(printf '| %-8s | %-10s | %-16s | %9s | %6s | %7s |' "$tool" "$mode" "$reloads" "$requests" "$failed" "$rps")")
	local errs
	errs=$(grep -E 'Socket errors|Non-2xx' "$out" | sed 's/^ *//' | paste -sd ';' || true)
	details+=("$tool $mode reloads=$reloading: ${errs:-none}")
	if [ -s "$work/reload-errors" ]; then
		details+=("  failed reloads: $(sort "$work/reload-errors" | uniq -c | head -5 | tr '\n' ';')")
	fi
	echo "  $tool $mode reloads=$reloading: $requests requests, $failed failed, $rps req/s, reloads $reloads" >&2
}

echo "machine: $(nproc) cores, $(uname -sr), $(go version | awk '{ print $3, $4 }')"
echo "mworker: $("$mw" version)"
echo "haproxy: $(haproxy -v | head -1)"
echo "wrk: $(wrk -v 2>&1 | head -1 || true)"
echo "wrk -t$THREADS -c$CONNECTIONS -d$DURATION on loopback, a reload every ${INTERVAL}s"
echo

# --- the runs ------------------------------------------------------------

run_mworker() {
	echo "mworker: $WORKERS demo workers, --ready notify" >&2
	start_mworker notify
	bench mworker close yes "$MW_PORT" "$mw" reload --control "$ctl"
	wait_until 30 "mworker to settle" settled
	bench mworker close no "$MW_PORT"
	bench mworker keep-alive yes "$MW_PORT" "$mw" reload --control "$ctl"
	wait_until 30 "mworker to settle" settled
	bench mworker keep-alive no "$MW_PORT"
	stop_mworker
}

run_haproxy() {
	echo "haproxy: -W, http-request return" >&2
	port_free "$HA_PORT" || die "127.0.0.1:$HA_PORT is in use: set HA_PORT"
	cat >"$work/haproxy.cfg" <<EOF
global
    # Bounds how long an old worker may linger after a reload.
    hard-stop-after 30s
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend bench
    bind 127.0.0.1:$HA_PORT
    http-request return status 200 content-type text/plain string ok
EOF
	haproxy -W -f "$work/haproxy.cfg" >>"$work/haproxy.log" 2>&1 &
	ha_pid=$!
	wait_until 20 "haproxy on 127.0.0.1:$HA_PORT (log: $work/haproxy.log)" port_open "$HA_PORT"
	bench haproxy close yes "$HA_PORT" kill -USR2 "$ha_pid"
	bench haproxy close no "$HA_PORT"
	bench haproxy keep-alive yes "$HA_PORT" kill -USR2 "$ha_pid"
	bench haproxy keep-alive no "$HA_PORT"
	kill -TERM "$ha_pid"
	wait "$ha_pid" || true
	ha_pid=""
}

# run_roundtrip READY-MODE times ROUNDTRIPS reloads, each once the
# previous one has settled, into $work/roundtrips.READY-MODE.
run_roundtrip() {
	echo "round trip: $ROUNDTRIPS reloads of $WORKERS workers, --ready $1" >&2
	start_mworker "$1"
	local t0 t1 i
	: >"$work/roundtrips.$1"
	for ((i = 0; i < ROUNDTRIPS; i++)); do
		t0=$(now_ns)
		"$mw" reload --control "$ctl" >/dev/null || die "mworker reload failed during the round-trip run (log: $work/mworker.log)"
		t1=$(now_ns)
		echo $(((t1 - t0) / 1000)) >>"$work/roundtrips.$1"
		wait_until 30 "mworker to settle after a reload" settled
	done
	stop_mworker
}

runs() { [[ " $TOOLS " == *" $1 "* ]]; }

if runs mworker; then run_mworker; fi
if runs haproxy; then run_haproxy; fi
if runs mworker || runs roundtrip; then
	for mode in $ROUNDTRIP_READY; do run_roundtrip "$mode"; done
fi

if [ ${#rows[@]} -gt 0 ]; then
	echo
	echo "| tool     | mode       | reloads          |  requests | failed |   req/s |"
	echo "|----------|------------|------------------|----------:|-------:|--------:|"
	printf '%s\n' "${rows[@]}"
	echo
	echo "wrk's errors (failed = non-2xx/3xx + socket errors):"
	printf '  %s\n' "${details[@]}"
fi
for mode in $ROUNDTRIP_READY; do
	[ -s "$work/roundtrips.$mode" ] || continue
	echo
	sort -n "$work/roundtrips.$mode" | awk -v w="$WORKERS" -v mode="$mode" '
		{ t[NR] = $1 }
		END {
			med = (NR % 2) ? t[(NR + 1) / 2] : (t[NR / 2] + t[NR / 2 + 1]) / 2
			printf "mworker reload round trip, %d workers, --ready %s, %d reloads: median %.1f ms (min %.1f, max %.1f)\n",
				w, mode, NR, med / 1000, t[1] / 1000, t[NR] / 1000
		}'
done
