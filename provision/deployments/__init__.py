"""Deployment backends, one module each, chosen by ``engine:`` in the manifest.

The reconciler calls :func:`decide`, :func:`deploy` and :func:`remove` with the manifest's
typed deployment; which backend serves it is this module's business.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..manifest import Deployment
    from ..plan import Action
    from .base import DeployContext, DeploymentBackend, DeploymentRecord

# engine name -> "module:Class"; modules are imported only when a deployment uses them.
BACKENDS = {
    "vllm": "provision.deployments.vllm:VllmBackend",
    "transformers": "provision.deployments.transformers:TransformersBackend",
    "ollama": "provision.deployments.ollama:OllamaBackend",
    "openai": "provision.deployments.openai:OpenAIBackend",
}


def backend(engine: str) -> DeploymentBackend[Any, Any]:
    """The backend of ``engine``. Its spec and observation types are its own: the manifest's
    discriminator (``engine:``) guarantees a spec reaches only the backend of its class."""
    module_name, _, class_name = BACKENDS[engine].partition(":")
    deployer: DeploymentBackend[Any, Any] = getattr(importlib.import_module(module_name), class_name)()
    return deployer


def decide(name: str, spec: Deployment, ctx: DeployContext) -> Action:
    """Observe ``name`` (reads only), then plan it."""
    deployer = backend(spec.engine)
    return deployer.plan(name, spec, deployer.observe(name, spec, ctx), ctx)


def deploy(action: Action, spec: Deployment, ctx: DeployContext) -> DeploymentRecord:
    """Carry out ``action``; the record to keep in state."""
    return backend(spec.engine).apply(action, spec, ctx)


def remove(name: str, record: DeploymentRecord, ctx: DeployContext) -> None:
    """Remove what the backend named in ``record`` created for ``name`` (a record without one:
    nothing of provision's is known to be there)."""
    engine = record.get("engine")
    if isinstance(engine, str) and engine:
        backend(engine).remove(name, record, ctx)
