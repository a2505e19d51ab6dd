"""Checks of a manifest that need no network: what ``validate`` can refuse before any apply.

Pure functions over values (the ``models_dir`` check reads only ``stat``); each returns a
problem in words, or ``None``. :mod:`provision.manifest` turns them into errors with the
file, line and field.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

# Ollama's name parts (types/model/name.go): alphanumeric or '_' first, at most 80
# characters (350 for a host); a namespace may not contain '.', only a host may hold ':'.
_MODEL_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,79}")
_NAMESPACE_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,79}")
_HOST_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:-]{0,349}")
OLLAMA_DEFAULT_HOST = "registry.ollama.ai"
OLLAMA_DEFAULT_NAMESPACE = "library"
OLLAMA_NAME_RULES = (
    "[host/][namespace/]model[:tag]; each part starts with a letter, digit or '_' and "
    "holds letters, digits, '_', '-' or '.' (no '.' in a namespace), at most 80 characters"
)
_ALL_INTERFACES = {"0.0.0.0", "::", "[::]", ""}


def split_ollama_name(raw: str) -> tuple[str, str, str, str] | None:
    """(host, namespace, model, tag) of an Ollama model name, defaults filled in; None if invalid."""
    last = raw.rsplit("/", 1)[-1]
    path, _, tag = raw.rpartition(":") if ":" in last else (raw, "", "latest")
    parts = path.split("/")
    if not 1 <= len(parts) <= 3 or not _MODEL_PART.fullmatch(tag):
        return None
    host, namespace, model = [OLLAMA_DEFAULT_HOST, OLLAMA_DEFAULT_NAMESPACE][: 3 - len(parts)] + parts
    if not (_HOST_PART.fullmatch(host) and _NAMESPACE_PART.fullmatch(namespace) and _MODEL_PART.fullmatch(model)):
        return None
    return host, namespace, model, tag


def ollama_name_problem(raw: str) -> str | None:
    if split_ollama_name(raw) is None:
        return f"{raw!r} is not a valid Ollama model name: write ollama://{OLLAMA_NAME_RULES}"
    return None


def port_conflicts(published: Iterable[tuple[str, str, int]]) -> tuple[str, str] | None:
    """(deployment, message) for the first of two deployments published on the same host port.

    ``published`` is (deployment, bind address, port); all-interfaces binds clash with any.
    """
    seen: list[tuple[str, str, int]] = []
    for name, bind, port in published:
        for other, other_bind, other_port in seen:
            if port == other_port and (bind == other_bind or {bind, other_bind} & _ALL_INTERFACES):
                return name, f"port {port} on {bind or '*'} is already taken by deployment {other!r}"
        seen.append((name, bind, port))
    return None


def models_dir_problem(path: Path) -> str | None:
    """Why ``path`` cannot hold model folders: the root, or something that is not a folder."""
    if path == Path(path.anchor):
        return f"{path} is the filesystem root: models would be placed (and removed) beside system folders"
    if path.exists() and not path.is_dir():
        return f"{path} exists and is not a folder"
    return None
