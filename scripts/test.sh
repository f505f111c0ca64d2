#!/usr/bin/env bash
# Sets everything up (system packages, .venv with the test tools, verified model folders) and runs the whole
# test suite: lint (ruff), types (mypy), then pytest, including the tests on real models, a real virtual microphone,
# a real Mosquitto broker and real SQLite. Extra arguments go to pytest, e.g. `bash scripts/test.sh -k store`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --dev
echo "test: ruff" >&2
.venv/bin/ruff check soundmond export tests scripts
echo "test: mypy" >&2
.venv/bin/mypy
echo "test: pytest" >&2
export SOUNDMOND_TEST_MODELS="$PWD/models"
exec .venv/bin/python -m pytest -ra "$@"
