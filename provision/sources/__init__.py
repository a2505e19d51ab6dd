"""Model sources, chosen by the URL scheme of ``source:`` (as RamaLama's transports)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..manifest import Manifest
    from ..state import State
    from .base import FileSource, ServerSource

FILE_SCHEMES = ("hf", "ms", "file")


def file_source(scheme: str, manifest: Manifest) -> FileSource:
    """The source for a file-based scheme; imported lazily so start-up stays fast."""
    if scheme == "hf":
        from .huggingface import HuggingFaceSource

        return HuggingFaceSource(
            manifest.settings.huggingface,
            max_connections=manifest.settings.max_parallel_downloads,
            connections_per_host=manifest.settings.max_connections_per_host,
        )
    if scheme == "file":
        from .local import LocalSource

        return LocalSource(manifest)
    if scheme == "ms":
        from .modelscope import ModelScopeSource

        return ModelScopeSource(
            manifest.settings.modelscope,
            max_connections=manifest.settings.max_parallel_downloads,
            connections_per_host=manifest.settings.max_connections_per_host,
        )
    raise KeyError(scheme)


def server_source(scheme: str, manifest: Manifest, state: State) -> ServerSource:
    """The source of models a server holds (``ollama://``); it records ownership in ``state``."""
    if scheme == "ollama":
        from .ollama import OllamaServerSource

        return OllamaServerSource(manifest, state)
    raise KeyError(scheme)
