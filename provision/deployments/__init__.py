"""Deployment engines, one module each, chosen by ``engine:`` in the manifest."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .base import DeploymentBackend

# engine name -> "module:Class"; modules are imported only when a deployment uses them.
BACKENDS = {
    "vllm": "provision.deployments.vllm:VllmBackend",
    "transformers": "provision.deployments.transformers:TransformersBackend",
    "ollama": "provision.deployments.ollama:OllamaBackend",
    "openai": "provision.deployments.openai:OpenAIBackend",
}


def backend(engine: str) -> DeploymentBackend:
    module_name, _, class_name = BACKENDS[engine].partition(":")
    return getattr(importlib.import_module(module_name), class_name)()
