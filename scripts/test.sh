#!/usr/bin/env bash
# One command on a fresh machine: set up .venv, lint, type-check, check the layers, run the whole test suite.
# Uses TICKETFLEET_DATABASE_URL / TICKETFLEET_REDIS_URL when set, else embedded servers from wheels.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
ruff check .
ruff format --check .
mypy
lint-imports  # the layer order and no import cycles (docs/architecture.md)
python -m pytest "$@"
