#!/usr/bin/env bash
# The README's test command: set up ./.venv, lint, run the pytest suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup_env.sh "test,export"
echo "[test] lint: flake8, isort, black"
flake8 smart_nets tests benchmarks
isort --check-only --diff smart_nets tests benchmarks
black --check --quiet smart_nets tests benchmarks
# two workers, one test file each at a time (a file's module fixtures are built once), one torch thread each: the
# suite spends much of its time starting bundle processes, which one core does while the other computes.
# TEST_WORKERS=0 runs it in this process alone.
WORKERS="${TEST_WORKERS:-2}"
if [ "$WORKERS" != "0" ]; then
    echo "[test] pytest ($WORKERS workers, OMP_NUM_THREADS=1)"
    OMP_NUM_THREADS=1 python -m pytest -n "$WORKERS" --dist loadfile "$@"
else
    echo "[test] pytest"
    python -m pytest "$@"
fi
