#!/usr/bin/env bash
# The README's test command: set up ./.venv, lint, run the pytest suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup_env.sh "test,export"
echo "[test] lint: flake8, isort, black"
flake8 smart_nets tests benchmarks
isort --check-only --diff smart_nets tests benchmarks
black --check --quiet smart_nets tests benchmarks
echo "[test] pytest"
python -m pytest "$@"
