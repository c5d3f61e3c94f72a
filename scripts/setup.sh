#!/usr/bin/env bash
# One-step setup: system packages (apt-get) + a virtual environment in .venv with isdrama and its
# extras. Quick when everything is already there (a stamp keyed by pyproject.toml's hash).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${ISDRAMA_VENV:-.venv}"
PY="${PYTHON:-python3}"

need_apt=()
command -v espeak-ng >/dev/null 2>&1 || need_apt+=(espeak-ng)
[ -f /usr/share/libmysofa/MIT_KEMAR_normal_pinna.sofa ] || need_apt+=(libmysofa1)
command -v ffmpeg >/dev/null 2>&1 || true   # optional, not needed
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "[setup] apt-get install ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

[ -x "$VENV/bin/python" ] || { echo "[setup] creating $VENV"; "$PY" -m venv "$VENV"; }
stamp="$VENV/.isdrama-setup-$(sha1sum pyproject.toml scripts/setup.sh | sha1sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "[setup] pip install -e .[eval,test,video] (first run downloads a few GB: torch)"
  "$VENV/bin/pip" install -q -e ".[eval,test,video]"
  # resemblyzer pins the compiled `webrtcvad` and a stray `typing` backport: install it alone.
  "$VENV/bin/pip" install -q --no-deps "resemblyzer==0.1.4"
  rm -f "$VENV"/.isdrama-setup-*
  touch "$stamp"
fi
