"""Model sources, chosen by the URL scheme of ``source:`` (as RamaLama's transports).

The schemes are listed here only: every module asks :data:`SOURCE_SCHEMES`, :data:`HUB_SCHEMES`,
:data:`FILE_SCHEMES` or :func:`parse_source`.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from ..manifest_checks import ollama_name_problem

if TYPE_CHECKING:
    from ..manifest import Manifest
    from ..state import State
    from .base import FileSource, ServerSource

SOURCE_SCHEMES = ("hf", "ms", "ollama", "file")  # what a manifest's ``source:`` may start with
HUB_SCHEMES = ("hf", "ms")  # a hub's repository: owner/name at a revision, files chosen by include/exclude
FILE_SCHEMES = ("hf", "ms", "file")  # files provision places in the models folder; the rest live in a server
# fullmatch, ASCII: `$` alone lets "org/name\n" through, and `\w` takes any script's letters
_REPO_ID = re.compile(r"[\w.-]+/[\w.-]+", re.ASCII)


def parse_source(source: str) -> tuple[str, str]:
    """``scheme://location`` as its scheme and location; ValueError (the message a manifest shows) if
    the scheme is unknown or the location is not one the scheme takes."""
    scheme, sep, location = source.partition("://")
    if not sep or scheme not in SOURCE_SCHEMES or not location:
        raise ValueError(
            f"unknown source {source!r}: expected one of " + ", ".join(f"{s}://..." for s in SOURCE_SCHEMES)
        )
    if scheme in HUB_SCHEMES and not _REPO_ID.fullmatch(location):
        raise ValueError(f"{source!r}: expected {scheme}://owner/name")
    if scheme in HUB_SCHEMES and ".." in location.split("/"):
        raise ValueError(f"{source!r}: '..' is not a repository name")
    if scheme == "ollama" and (problem := ollama_name_problem(location)):
        raise ValueError(problem)
    return scheme, location


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
