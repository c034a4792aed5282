#!/usr/bin/env bash
# Set up .venv with the project and its test and docs tools, at the versions in constraints.txt. Safe to re-run.
# Browser tests need Chromium from Debian (installed when run as root).
# RLHF_REFRESH_LOCK=1 ./setup.sh installs the newest versions pyproject.toml allows and rewrites constraints.txt.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
pip install -q --upgrade pip >/dev/null 2>&1 || true
# torch first and pinned: PyPI's 2.13.0 is the CUDA build on a GPU machine, and the CPU build from local
# disk here (PLATFORM.md); anything unpinned would pull a newer multi-GB CUDA build.
python -c "import torch" >/dev/null 2>&1 || pip install -q torch==2.13.0
if [ "${RLHF_REFRESH_LOCK:-0}" = 1 ]; then
  pip install -q -e ".[test,docs]"
  { sed -n '1,2p' constraints.txt; pip freeze --exclude-editable | sed -E 's/^torch==([0-9.]+)\+.*/torch==\1/'; } > constraints.txt.new
  mv constraints.txt.new constraints.txt
  echo "setup: constraints.txt refreshed"
else
  pip install -q -c constraints.txt -e ".[test,docs]"
fi
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) || echo "setup: chromium not installed; browser tests will be skipped" >&2
fi
echo "setup: ready (.venv)"
