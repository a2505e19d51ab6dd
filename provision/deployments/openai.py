"""Engine ``openai``: a hosted OpenAI-compatible API (DeepSeek, OpenAI, a remote vLLM).

There is nothing to provision: ``plan`` is always "no change"; the client
(:mod:`provision.client.openai`) is the only contact.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from ..manifest import OpenAIDeployment
from ..plan import Action, Change
from .base import DeployContext


class OpenAIBackend:
    """``engine: openai``: a hosted API. Nothing to create, update or remove."""

    engine: ClassVar[str] = "openai"

    def observe(self, name: str, spec: OpenAIDeployment, ctx: DeployContext) -> None:
        return None

    def plan(self, name: str, spec: OpenAIDeployment, observed: None, ctx: DeployContext) -> Action:
        # status is offline: whether the API answers is smoke-test's to say
        return Action("deployment", name, Change.NOOP, "hosted API: nothing to provision", details={"state": "hosted"})

    def apply(self, action: Action, spec: OpenAIDeployment, ctx: DeployContext) -> dict[str, Any]:
        return {"engine": self.engine, "base_url": spec.base_url}  # never the key

    def remove(self, name: str, record: Mapping[str, Any], ctx: DeployContext) -> None:
        return None
