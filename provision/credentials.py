"""Which credential goes to which endpoint: what ``plan`` shows, never a value.

A token is sent to whatever endpoint the manifest (or ``$HF_ENDPOINT``) names, as
huggingface_hub does, so the user is told: ``huggingface token from $HF_TOKEN ->
https://hf-mirror.com``. Secrets are resolved here only to learn whether they are set.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from pydantic import SecretStr

from .errors import ManifestError
from .manifest import Manifest
from .manifest_loader import SecretReference


def clean_token(token: str | None) -> str | None:
    """A token as it goes in a header: CR and LF removed and the ends stripped, as huggingface_hub
    cleans its own (a token file or ``$(cat file)`` with a CRLF ending). Uncleaned, http.client
    refuses the header with the token itself in its message. None when nothing is left."""
    cleaned = (token or "").replace("\r", "").replace("\n", "").strip()
    return cleaned or None


def secret_text(secret: SecretStr | None) -> str | None:
    """A manifest secret (a deployment's ``api_key``) as it goes in a header: cleaned as a token."""
    return clean_token(secret.get_secret_value()) if secret is not None else None


@dataclass(frozen=True)
class Route:
    service: str  # "huggingface", "modelscope", "deployments.<name>.api_key"
    source: str | None  # "$HF_TOKEN", "the file ... (`hf auth login`)"; None: nothing is sent
    endpoint: str

    def __str__(self) -> str:
        if self.source is None:
            return f"{self.service}: no token sent to {self.endpoint}"
        return f"{self.service} from {self.source} -> {self.endpoint}"


def _configured(secret: SecretStr | None, field: str) -> str | None:
    """Where a manifest secret comes from; None when absent or empty (the fallbacks apply)."""
    if secret is None:
        return None
    names = secret.variables if isinstance(secret, SecretReference) else ()
    try:
        value = secret.get_secret_value()
    except ManifestError:  # referenced but unset: its first use is an error
        return " and ".join(f"${name}" for name in names) + " (not set)"
    if not value:
        return None
    return " and ".join(f"${name}" for name in names if os.environ.get(name)) or field


def token_routes(manifest: Manifest) -> list[Route]:
    """One route per hub the manifest's models use, and per deployment with an ``api_key``."""
    schemes = {spec.scheme for spec in manifest.models.values()}
    routes = []
    if "hf" in schemes:
        from .sources.huggingface import DEFAULT_ENDPOINT as HF_ENDPOINT
        from .sources.huggingface import implicit_token_source

        hf = manifest.settings.huggingface
        source = _configured(hf.token, "settings.huggingface.token") or (implicit_token_source() or (None, ""))[0]
        routes.append(
            Route(
                "huggingface token", source, (hf.endpoint or os.environ.get("HF_ENDPOINT") or HF_ENDPOINT).rstrip("/")
            )
        )
    if "ms" in schemes:
        from .sources.modelscope import DEFAULT_ENDPOINT as MS_ENDPOINT

        ms = manifest.settings.modelscope
        source = _configured(ms.token, "settings.modelscope.token") or (
            "$MODELSCOPE_API_TOKEN" if os.environ.get("MODELSCOPE_API_TOKEN") else None
        )
        routes.append(
            Route(
                "modelscope token",
                source,
                (ms.endpoint or os.environ.get("MODELSCOPE_ENDPOINT") or MS_ENDPOINT).rstrip("/"),
            )
        )
    for name, deployment in manifest.deployments.items():
        key = getattr(deployment, "api_key", None)
        if key is None:
            continue
        endpoint = getattr(deployment, "base_url", None) or f"the vllm container {name} (as VLLM_API_KEY)"
        routes.append(Route(f"deployments.{name}.api_key", _configured(key, "the manifest"), endpoint))
    return routes
