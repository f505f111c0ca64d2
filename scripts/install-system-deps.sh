#!/bin/sh
# Install the system packages soundmond and its tests need (Debian / Ubuntu / Raspberry Pi OS).
#
#   python3-venv       `python3 -m venv` (scripts/setup.sh makes .venv with it)
#   libportaudio2      PortAudio for `sounddevice` (its Linux wheel does not bundle it)
#   libsndfile1        libsndfile for `soundfile` (decoding wav/flac/ogg/mp3)
#   pulseaudio, pulseaudio-utils
#                      the private null-sink "virtual microphone" of the capture tests (pacat/parec/pactl)
#   mosquitto, mosquitto-clients
#                      a real MQTT broker for the publisher tests
#   systemd            only for `systemd-analyze` (unit verification and the hardening score in tests)
#   chromium           headless browser of the `soundmond report` test (opens the page, screenshots it, reads
#                      its console); workstation and CI only, a station does not need it
#
# Idempotent: packages already installed are skipped; `apt-get update` runs at most once, and only when something
# is missing. Works as root or through sudo. Everything it does is reported on stderr.
# Usage: scripts/install-system-deps.sh [--dry-run]
set -eu

PACKAGES="python3-venv libportaudio2 libsndfile1 pulseaudio pulseaudio-utils mosquitto mosquitto-clients systemd chromium"

log() { printf 'install-system-deps: %s\n' "$*" >&2; }

DRY_RUN=0
case "${1:-}" in
  --dry-run) DRY_RUN=1 ;;
  "") ;;
  -h|--help) sed -n '2,19p' "$0" >&2; exit 0 ;;
  *) log "unknown argument: $1 (use --dry-run or nothing)"; exit 2 ;;
esac

if ! command -v apt-get >/dev/null 2>&1 || ! command -v dpkg-query >/dev/null 2>&1; then
  log "apt-get/dpkg-query not found: this script supports Debian-based systems only."
  log "install by hand: $PACKAGES"
  exit 1
fi

if [ "$(id -u)" -eq 0 ]; then
  SUDO=""
elif command -v sudo >/dev/null 2>&1; then
  SUDO="sudo"
else
  log "not root and sudo is not available: run as root"
  exit 1
fi

is_installed() {
  # "install ok installed" only for a fully installed package (not config-files / half-installed)
  [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" = "install ok installed" ]
}

MISSING=""
for pkg in $PACKAGES; do
  if is_installed "$pkg"; then
    log "already installed: $pkg"
  else
    MISSING="$MISSING $pkg"
  fi
done
MISSING="${MISSING# }"

if [ -z "$MISSING" ]; then
  log "nothing to install"
  exit 0
fi

log "missing: $MISSING"
if [ "$DRY_RUN" -eq 1 ]; then
  log "dry run: would run 'apt-get update' and 'apt-get install -y --no-install-recommends $MISSING'"
  exit 0
fi

export DEBIAN_FRONTEND=noninteractive
log "running: ${SUDO:+$SUDO }apt-get update"
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update >&2
log "running: ${SUDO:+$SUDO }apt-get install -y --no-install-recommends $MISSING"
# shellcheck disable=SC2086  # word splitting of the package list is intended
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $MISSING >&2

FAILED=""
for pkg in $MISSING; do
  is_installed "$pkg" || FAILED="$FAILED $pkg"
done
if [ -n "$FAILED" ]; then
  log "still not installed after apt-get:$FAILED"
  exit 1
fi
if ! command -v systemd-analyze >/dev/null 2>&1; then
  log "warning: systemd is installed but systemd-analyze is not on PATH"
fi
log "installed: $MISSING"
