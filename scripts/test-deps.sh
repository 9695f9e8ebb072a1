#!/bin/sh
# scripts/test-deps.sh: installs the Debian packages the tests use beyond Go,
# when they are missing: systemd (systemd-analyze verifies the unit files of
# docs/systemd.md; systemd-socket-activate launches the socket-activated
# example). The tests in e2e/container use them; systemd itself is not
# started. Run as root on Debian; elsewhere it says what is missing and the
# tests that need it skip with that reason.
set -eu
missing=
command -v systemd-analyze >/dev/null 2>&1 || missing="systemd"
command -v systemd-socket-activate >/dev/null 2>&1 || missing="systemd"
[ -z "$missing" ] && exit 0
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
	echo "test-deps: $missing is missing and cannot be installed here (needs root and apt-get): the unit-file tests will skip" >&2
	exit 0
fi
echo "test-deps: installing $missing with apt-get" >&2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
