"""The side of ``render kubernetes`` that touches files: read the lock, write YAML.

``-o DIR`` writes one file per object, ``<name>.<kind>.yaml``, each starting with
:data:`HEADER`; a file there that starts with it but is no longer rendered (a deployment
removed from the manifest) is deleted, and no other file is touched.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from ..errors import RenderError
from ..manifest import Manifest, ModelSpec
from .kubernetes import KubeObject, Rendered, RenderOptions, render
from .locked import lock_entries

HEADER = "# Rendered by `provision render kubernetes`; edit the manifest and render again, not this file.\n"


class _Dumper(yaml.SafeDumper):
    """Block style, no anchors, and multi-line strings (the step's script) as literal blocks."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def to_yaml(obj: KubeObject) -> str:
    text: str = yaml.dump(dict(obj.body), Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=1 << 16)
    return text


def render_manifest(manifest: Manifest, options: RenderOptions) -> Rendered:
    """Render from the manifest and its lock; builds URLs as provision's sources do, offline."""
    from ..sources import file_source

    sources: dict[str, Any] = {}

    def file_url(scheme: str, spec: ModelSpec, resolved: str, path: str) -> str:
        if scheme not in sources:
            sources[scheme] = file_source(scheme, manifest)
            endpoint = urlsplit(sources[scheme].endpoint)
            if endpoint.username or endpoint.password:
                raise RenderError(
                    f"the {scheme}:// endpoint carries credentials in its URL",
                    hint="put the token in settings (it becomes a Secret), not in the endpoint",
                )
        url: str = sources[scheme].file_url(spec, resolved, path)
        return url

    try:
        return render(manifest, lock_entries(manifest), options, file_url)
    finally:
        for source in sources.values():
            source.close()


def stream(objects: Iterable[KubeObject]) -> str:
    """All objects as one multi-document YAML stream."""
    return HEADER + "".join(f"---\n{to_yaml(obj)}" for obj in objects)


def write_dir(directory: Path, objects: Iterable[KubeObject]) -> tuple[list[Path], list[Path]]:
    """Write each object atomically; delete our files that are no longer rendered. (written, removed)"""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for obj in objects:
        path = directory / obj.filename
        fd, tmp = tempfile.mkstemp(prefix=f".{obj.filename}.", suffix=".tmp", dir=directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(HEADER + to_yaml(obj))
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        written.append(path)
    removed = []
    for path in sorted(directory.glob("*.yaml")):
        if path in written or path.is_symlink() or not path.is_file():
            continue
        with path.open(encoding="utf-8", errors="replace") as handle:
            ours = handle.read(len(HEADER)) == HEADER
        if ours:
            path.unlink()
            removed.append(path)
    return written, removed
