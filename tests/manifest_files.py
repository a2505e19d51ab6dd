"""A test's manifest and its lock file: the one writer and the one path rule every test uses."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_manifest(folder: Path, body: str, name: str = "m.yaml") -> Path:
    """Write ``body`` (manifest YAML) to ``folder/name``, replacing what was there; its path."""
    path = folder / name
    path.write_text(body, encoding="utf-8")
    return path


def lock_path(manifest: Path) -> Path:
    """The lock file provision keeps beside ``manifest``: ``dev.yaml`` -> ``dev.lock.json``.

    Spelled out here rather than taken from ``provision.manifest``, so a change to the rule
    fails the tests instead of moving them along with it."""
    return manifest.with_name(manifest.name.rsplit(".", 1)[0] + ".lock.json")


def lock_of(manifest: Path) -> dict[str, Any]:
    """The lock file beside ``manifest``, parsed."""
    data: dict[str, Any] = json.loads(lock_path(manifest).read_text(encoding="utf-8"))
    return data
