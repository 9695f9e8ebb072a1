#!/bin/sh
# scripts/arm64-qemu.sh: builds the test binaries of internal/earlysig and
# osadapter for linux/arm64 and runs them under qemu-user (qemu-aarch64, in
# Debian's qemu-user package), so that the hand-written arm64 assembly
# (internal/earlysig/earlysig_linux_arm64.s, osadapter/rawsig_arm64.s) runs
# somewhere other than on paper. Not part of CI; about 30 s to build, a few
# seconds to run. docs/signals.md, "arm64, under qemu-user", says what it
# runs, what it leaves out and why.
#
# Left out (each one fails under qemu-user for a reason of qemu's, not of the
# arm64 code): every test that starts the test binary or mworker again (an
# exec of an arm64 file fails with ENOEXEC unless binfmt_misc sends it to
# qemu), TestIsRunningImage (qemu answers stat("/proc/self/exe") with its
# own file), TestBlockAllThreads* and TestHoldExec* (qemu's own thread,
# listed in /proc/self/task, never runs the guest's handler: each change
# waits out its timeout).
set -eu
command -v qemu-aarch64 >/dev/null 2>&1 || { echo "arm64-qemu: qemu-aarch64 is missing (apt-get install qemu-user)" >&2; exit 1; }
root=$(cd "$(dirname "$0")/.." && pwd)
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cd "$root"
CGO_ENABLED=0 GOARCH=arm64 go test -c -o "$dir/earlysig.test" ./internal/earlysig
CGO_ENABLED=0 GOARCH=arm64 go test -c -tags startsigcheck -o "$dir/osadapter.test" ./osadapter

# The tests start with every signal at its default. TestStartSignalsReadsTheRuntime
# runs again from a known start, which it compares with what startSignals
# reads: SIGUSR1 ignored, SIGUSR2 and SIGTERM blocked (env cannot unblock
# what this shell inherited blocked).
if ! grep -q '^SigBlk:[[:space:]]*0*$' /proc/$$/status; then
	echo "arm64-qemu: this shell starts with signals blocked ($(grep SigBlk /proc/$$/status)): the tests need a known start" >&2
	exit 1
fi
run() { env --default-signal qemu-aarch64 "$@"; }
status=0
(cd internal/earlysig && run "$dir/earlysig.test" -test.count=1 -test.timeout=2m -test.v) || status=1
(cd osadapter && run "$dir/osadapter.test" -test.count=1 -test.timeout=4m \
	-test.skip='TestReal|TestOrphanedProcessGroup|TestTrampolinesForReal|TestIsRunningImage|TestBlockAllThreads|TestHoldExec') || status=1
(cd osadapter && env --default-signal --ignore-signal=USR1 --block-signal=USR2,TERM \
	OSADAPTER_TEST_START='ign=10;blk=12,15' qemu-aarch64 "$dir/osadapter.test" \
	-test.count=1 -test.timeout=1m -test.v -test.run='^TestStartSignalsReadsTheRuntime$') || status=1
if [ "$status" = 0 ]; then echo "arm64-qemu: ok"; else echo "arm64-qemu: FAIL"; fi
exit "$status"
