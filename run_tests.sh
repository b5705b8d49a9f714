#!/usr/bin/env bash
# Set up .venv if needed, then run the default test suite (slow tests excluded: -m "not slow").
set -euo pipefail
cd "$(dirname "$0")"
scripts/bootstrap.sh
exec .venv/bin/python -m pytest -m "not slow" -q "$@"
