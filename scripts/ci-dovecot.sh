#!/usr/bin/env bash
# Installs Dovecot's IMAP server for tests/connectors/test_connector_imap.py (Debian's dovecot-imapd). Idempotent and
# quick when already installed. The tests start their own `dovecot -F -c CONF` on a free loopback port, so
# the system instance the package would start is kept from starting (and stopped if it runs): it would
# hold ports 143/993 for nothing.
set -euo pipefail

if command -v dovecot >/dev/null 2>&1 && [ -x /usr/lib/dovecot/imap ]; then
  echo "ci-dovecot: dovecot $(dovecot --version) already installed"
else
  if [ "$(id -u)" -ne 0 ]; then
    echo "ci-dovecot: dovecot is missing and installing it needs root" >&2
    exit 1
  fi
  # A policy-rc.d answering 101 stops the package's postinst from starting the system service.
  policy=/usr/sbin/policy-rc.d
  own_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    own_policy=1
  fi
  trap 'if [ "$own_policy" = 1 ]; then rm -f "$policy"; fi' EXIT
  export DEBIAN_FRONTEND=noninteractive
  # Another apt run (a second CI script) may hold the lock: wait for it rather than fail.
  lock=(-o DPkg::Lock::Timeout=600)
  apt-get "${lock[@]}" update -qq || apt-get "${lock[@]}" update -qq
  apt-get "${lock[@]}" install -y -qq --no-install-recommends -o Dpkg::Options::=--force-confdef \
    -o Dpkg::Options::=--force-confold dovecot-imapd >/dev/null
  echo "ci-dovecot: installed dovecot $(dovecot --version)"
fi

# Whatever started it (an older install, a service manager), a system dovecot is not needed by the tests.
if [ -f /run/dovecot/master.pid ] && kill -0 "$(cat /run/dovecot/master.pid)" 2>/dev/null; then
  dovecot -c /etc/dovecot/dovecot.conf stop 2>/dev/null || kill "$(cat /run/dovecot/master.pid)" || true
  echo "ci-dovecot: stopped the system dovecot"
fi
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  systemctl disable --now dovecot.service dovecot.socket >/dev/null 2>&1 || true
fi
