#!/usr/bin/env bash
# Serve smart_seg and smart_response with a real MONAI Label 0.8.5 server and use its REST API as 3D Slicer does
# (scripts/check_monailabel.py): /info/ lists both models; /infer/smart_seg returns a mask on the input's grid;
# /train/smart_seg runs one epoch and the next /infer uses the model it wrote; /infer/smart_response returns class
# probabilities. A release check, not part of the test suite: about 1 minute on 2 CPU cores once .venv-monailabel
# exists (creating it: ~45 s more plus ~190 MB of downloads; ~1 GB, mostly ITK and SimpleITK).
#
# MONAI Label goes into its own cached environment, .venv-monailabel (git-ignored, reused while its requirements are
# unchanged), layered over the project's .venv by a .pth line: torch (the CPU build), monai and the rest come from
# there and are never replaced. See scripts/monailabel_env/ for what is installed and why.
#   BASE_VENV (default .venv; made with scripts/setup_env.sh when missing)  MONAILABEL_VENV (default .venv-monailabel)
#   WORK_DIR (default outputs/monailabel_check, recreated)  PORT (default: a free one)  CHECK_TIMEOUT (s, default 1500)
set -euo pipefail
cd "$(dirname "$0")/.."
START=$(date +%s)
BASE_VENV="${BASE_VENV:-.venv}"
ML_VENV="${MONAILABEL_VENV:-.venv-monailabel}"
WORK_DIR="${WORK_DIR:-outputs/monailabel_check}"
ENV_DIR=scripts/monailabel_env
say() { echo "[monailabel] $*"; }
die() {
    echo "[monailabel] error: $*" >&2
    exit 1
}

if [ ! -x "$BASE_VENV/bin/python" ]; then
    say "no project environment at $BASE_VENV: creating it with scripts/setup_env.sh"
    # shellcheck disable=SC1091
    VENV="$BASE_VENV" . scripts/setup_env.sh ""
    deactivate
fi
BASE_PY="$BASE_VENV/bin/python"
BASE_SITE=$("$BASE_PY" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
"$BASE_PY" -c "import torch, monai" 2>/dev/null || die "$BASE_VENV lacks torch or monai: run scripts/setup_env.sh"

# the environment's fingerprint: its requirement files, the shims, and the project environment it is layered over
STAMP=$(cat "$ENV_DIR/requirements-no-deps.txt" "$ENV_DIR/requirements.txt" "$ENV_DIR/shims.py" <(echo "$BASE_SITE") \
    | sha256sum | cut -c1-16)
if [ "$(cat "$ML_VENV/.check-monailabel-stamp" 2>/dev/null)" != "$STAMP" ]; then
    say "setting up $ML_VENV (MONAI Label 0.8.5 over $BASE_VENV)"
    rm -rf "$ML_VENV"
    "$BASE_PY" -m venv "$ML_VENV"
    ML_SITE=$("$ML_VENV/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    echo "$BASE_SITE" >"$ML_SITE/_project_venv.pth"
    cp "$ENV_DIR/shims.py" "$ML_SITE/monailabel_shims.py"
    echo "import monailabel_shims; monailabel_shims.install()" >"$ML_SITE/monailabel_shims.pth"
    # pin what the project's environment has, so that no requirement can replace it
    "$BASE_PY" -c "import monai, numpy, torch; print(f'torch=={torch.__version__}\nnumpy=={numpy.__version__}\nmonai=={monai.__version__}')" \
        >"$ML_VENV/constraints.txt"
    PIP=("$ML_VENV/bin/pip" install -q --disable-pip-version-check -c "$ML_VENV/constraints.txt")
    # this order keeps pip quiet about monailabel's and pydicom-seg's declared requirements left out on purpose
    "${PIP[@]}" -r "$ENV_DIR/requirements.txt" || die "pip install -r $ENV_DIR/requirements.txt failed"
    "${PIP[@]}" --no-deps -r "$ENV_DIR/requirements-no-deps.txt" \
        || die "pip install --no-deps -r $ENV_DIR/requirements-no-deps.txt failed"
    echo "$STAMP" >"$ML_VENV/.check-monailabel-stamp"
fi
ML_PY="$ML_VENV/bin/python"
"$ML_PY" - "$BASE_SITE" <<'EOF' || die "$ML_VENV is broken: remove it and run again"
import os, sys
import monailabel.app  # noqa: F401  (the server's imports)
import torch
base = os.path.realpath(sys.argv[1])
where = os.path.realpath(torch.__file__)
assert where.startswith(base), f"torch comes from {where}, not from the project environment {base}"
print(f"[monailabel] MONAI Label {__import__('monailabel').__version__}, torch {torch.__version__} from {base}")
EOF
say "environment ready after $(($(date +%s) - START)) s"

# the driver runs the server in its own process group and stops it on every exit; this trap is the backstop for a
# driver that is killed outright (it leaves the server's process id in WORK_DIR/server.pid)
stop_server() {
    local pid
    pid=$(cat "$WORK_DIR/server.pid" 2>/dev/null) || return 0
    if kill -0 "$pid" 2>/dev/null; then
        say "stopping MONAI Label server (process group $pid)"
        kill -TERM -- "-$pid" 2>/dev/null || true
        for _ in $(seq 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
        kill -KILL -- "-$pid" 2>/dev/null || true
    fi
    rm -f "$WORK_DIR/server.pid"
}
trap stop_server EXIT
status=0
timeout --signal=TERM --kill-after=30 "${CHECK_TIMEOUT:-1500}" \
    "$ML_PY" scripts/check_monailabel.py --work_dir "$WORK_DIR" ${PORT:+--port "$PORT"} || status=$?
[ "$status" != 124 ] || echo "[monailabel] error: the check ran past CHECK_TIMEOUT=${CHECK_TIMEOUT:-1500} s" >&2
say "finished in $(($(date +%s) - START)) s (exit status $status)"
exit "$status"
