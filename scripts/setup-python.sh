#!/usr/bin/env bash
# Creates (once) the Python virtualenv the tests use: numpy and safetensors to
# read our outputs as a user would, moto's S3-compatible server for storage
# tests, and kubernetes-validate for the deployment manifests.
set -euo pipefail
CD_CACHE=${CD_CACHE:-$HOME/.cache/concept-depth}
VENV="$CD_CACHE/venv"
REQ="$(cd "$(dirname "$0")" && pwd)/requirements-test.txt"
STAMP="$VENV/.requirements.sha256"
want=$(sha256sum "$REQ" | cut -d' ' -f1)
if [[ -x "$VENV/bin/python" && -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]]; then
  exit 0
fi
python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$REQ"
echo "$want" > "$STAMP"
