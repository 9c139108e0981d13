#!/usr/bin/env bash
# Installs Request Tracker 5 (Debian's request-tracker5 + the SQLite backend) for the RT connector tests
# (tests/connectors/test_connector_rt.py start their own rt-server on a throwaway SQLite database, so nothing is
# configured or started here). Idempotent: a quick no-op when the packages are already installed.
set -euo pipefail

RT_SERVER=/usr/share/request-tracker5/libexec/rt-server
if [ -x "$RT_SERVER" ] && dpkg-query -W -f='${Status}\n' rt5-db-sqlite 2>/dev/null | grep -q "install ok installed"; then
  echo "ci-rt: request-tracker5 already installed"
  exit 0
fi

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
started=$(date +%s)

# Answer debconf up front so the install never stops to ask: SQLite via dbconfig-common, a site name,
# and no cron jobs (the tests run their own server and database).
$SUDO debconf-set-selections <<'SEL'
request-tracker5 request-tracker5/rtname string ticketfleet-ci
request-tracker5 request-tracker5/organization string ticketfleet.invalid
request-tracker5 request-tracker5/correspondaddress string rt@ticketfleet.invalid
request-tracker5 request-tracker5/commentaddress string rt-comment@ticketfleet.invalid
request-tracker5 request-tracker5/webbaseurl string http://localhost
request-tracker5 request-tracker5/webpath string /rt
request-tracker5 request-tracker5/handle-siteconfig-permissions boolean true
request-tracker5 request-tracker5/install-cronjobs boolean false
request-tracker5 request-tracker5/dbconfig-install boolean true
request-tracker5 request-tracker5/database-type select sqlite3
SEL

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends request-tracker5 rt5-db-sqlite >/dev/null

if [ ! -x "$RT_SERVER" ]; then
  echo "ci-rt: install finished but $RT_SERVER is missing" >&2
  exit 1
fi
echo "ci-rt: request-tracker5 installed in $(( $(date +%s) - started ))s"
