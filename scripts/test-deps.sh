#!/bin/sh
# scripts/test-deps.sh: installs the Debian packages the tests use beyond Go,
# when they are missing: systemd (systemd-analyze verifies the unit files of
# docs/systemd.md; systemd-socket-activate launches the socket-activated
# example; the tests in e2e/container use them; systemd itself is not
# started) and python3 (the watchdog test's worker sends its WATCHDOG=1
# datagrams with it, cmd/mworker) and prometheus (its promtool checks what
# /metrics serves: `promtool check metrics`, cmd/mworker), and the servers of
# e2e/servers (gunicorn, python3-uvicorn, nginx-light, haproxy, nodejs, puma,
# ruby-sd-notify for puma's READY=1), and tini and dumb-init (e2e/peers runs
# their own suites' cases against them beside mworker). Run as root on Debian; elsewhere it says what is missing and the
# tests that need it skip with that reason.
#
# The suites with real service managers run only when asked, and so are
# their packages installed only then (about 40 s with apt-get update):
#   MWORKER_E2E_SYSTEMD=1  e2e/systemd: debootstrap, systemd-container
#                          (systemd-nspawn); nsenter is in util-linux.
#   MWORKER_E2E_PODMAN=1   e2e/podman: podman, runc, catatonit.
set -eu
missing=
need() { command -v "$1" >/dev/null 2>&1 || case " $missing " in *" $2 "*) ;; *) missing="$missing $2" ;; esac; }
need systemd-analyze systemd
need systemd-socket-activate systemd
need python3 python3
need promtool prometheus
# e2e/servers: the recipes of docs/servers.md, each server run for real.
need gunicorn gunicorn
python3 -c 'import uvicorn' 2>/dev/null || /usr/bin/python3 -c 'import uvicorn' 2>/dev/null || missing="$missing python3-uvicorn"
need nginx nginx-light
need haproxy haproxy
need node nodejs
need puma puma
command -v ruby >/dev/null 2>&1 && ruby -e "require 'sd_notify'" 2>/dev/null || need ruby-sd-notify-missing ruby-sd-notify
# e2e/peers: the peers whose test suites it ports.
need tini tini
need dumb-init dumb-init
if [ "${MWORKER_E2E_SYSTEMD:-}" = 1 ]; then
	need debootstrap debootstrap
	need systemd-nspawn systemd-container
fi
if [ "${MWORKER_E2E_PODMAN:-}" = 1 ]; then
	need podman podman
	need runc runc
	[ -x /usr/bin/catatonit ] || [ -x /usr/libexec/podman/catatonit ] || need catatonit catatonit
fi
[ -z "$missing" ] && exit 0
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
	echo "test-deps:$missing missing and cannot be installed here (needs root and apt-get): the tests that use them will skip" >&2
	exit 0
fi
echo "test-deps: installing$missing with apt-get" >&2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
