#!/usr/bin/env bash
#
# bench/start.sh: start overhead, mworker against tini and dumb-init.
#
# What it measures: the wall time of a whole supervised run of `true`,
# with hyperfine (no shell in between, -N):
#
#   mworker run --restart no -- true
#   tini -- true
#   dumb-init true
#
# and `true` alone as the floor. Each command's time covers the
# supervisor's start, one fork+exec of the worker, its exit, the reap and
# the supervisor's exit: what a supervisor adds to a short-lived job or to
# a container's start. mworker is the release build (CGO_ENABLED=0); the
# row mworker-cgo is a plain `go build` with cgo on, which links libc.
#
# Prints hyperfine's summary and a table (mean, median, min in ms; the
# median's ratio to tini's), and writes OUT/start-overhead.png (median of
# each).
#
# Usage: bench/start.sh   (as root, or with tini, dumb-init and hyperfine
# installed)
#
# Environment (defaults in brackets):
#   RUNS [200]         runs of each command (after 10 warm-up runs)
#   OUT [docs/img]     where the PNG goes
#
# Installs tini, dumb-init and hyperfine with apt-get when they are
# missing; builds mworker and bench/plot from this checkout.

set -euo pipefail

RUNS=${RUNS:-200}

. "$(dirname "$0")/lib.sh"
bench_setup tini dumb-init hyperfine
OUT=${OUT:-docs/img}
mkdir -p "$OUT"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/mworker-start-bench.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM

build_mworker "$tmp/mworker"
MWORKER_CGO=1 build_mworker "$tmp/mworker-cgo"
(cd bench/plot && go build -o "$tmp/plot" .) || die "go build bench/plot failed"
true_bin=$(command -v true)

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(uname -sr), $(go version | awk '{ print $3 }')"
echo "$(hyperfine --version); tini: $(tini --version 2>&1 | head -1); dumb-init: $(dumb-init --version 2>&1 | head -1)"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"

# mworker logs three lines per run on stderr; hyperfine drops the output.
hyperfine -N --warmup 10 --runs "$RUNS" --style basic --export-csv "$tmp/start.csv" \
	-n mworker "$tmp/mworker run --restart no -- $true_bin" \
	-n mworker-cgo "$tmp/mworker-cgo run --restart no -- $true_bin" \
	-n tini "tini -- $true_bin" \
	-n dumb-init "dumb-init $true_bin" \
	-n "true alone" "$true_bin" >&2
echo "load average after:  $(cut -d' ' -f1-3 /proc/loadavg)"

# CSV: command,mean,stddev,median,user,system,min,max (seconds)
tini_med=$(awk -F, '$1 == "tini" { print $4 }' "$tmp/start.csv")
echo
echo "| command | runs | mean ms | median ms | min ms | user+sys ms | median / tini |"
echo "|---|---:|---:|---:|---:|---:|---:|"
awk -F, -v runs="$RUNS" -v tini="$tini_med" 'NR > 1 {
	printf "| %s | %d | %.2f | %.2f | %.2f | %.2f | %.2f |\n", $1, runs, $2 * 1000, $4 * 1000, $7 * 1000, ($5 + $6) * 1000, $4 / tini
}' "$tmp/start.csv"

awk -F, 'NR > 1 { printf "%s\t%.3f\n", $1, $4 * 1000 }' "$tmp/start.csv" |
	"$tmp/plot" -kind bars -o "$OUT/start-overhead.png" \
		-title "Start overhead: supervised run of true, median of $RUNS runs" -y "ms"
echo
echo "plot: $OUT/start-overhead.png"
