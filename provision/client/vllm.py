"""Client of ``engine: vllm``: the container's OpenAI-compatible API on the published port.

Chat is ``/v1/chat/completions``; a ``task: embed`` deployment (vLLM's pooling runner)
answers ``/v1/embeddings``. Both go through :class:`~provision.client.openai.OpenAIClient`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..credentials import secret_text
from ..deployments.vllm_spec import url_host
from ..manifest import VllmDeployment
from .openai import OpenAIClient

if TYPE_CHECKING:
    from ..deployments.base import DeployContext


def open_client(name: str, spec: VllmDeployment, ctx: DeployContext) -> OpenAIClient:
    key = secret_text(spec.api_key)  # a CR/LF from `$(cat keyfile)` would end the header
    return OpenAIClient(
        f"http://{url_host(spec.bind)}:{spec.port}/v1",
        spec.served_model_name or name,
        key,
        ctx.manifest.smoke_settings(name).timeout,
        key_hint=f"check deployments.{name}.api_key (and the ${{VAR}} it references)",
    )
