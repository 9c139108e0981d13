#!/usr/bin/env bash
# One command on a fresh machine: set up .venv and run the demo on embedded PostgreSQL and Redis.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/ticketfleet demo "$@"
