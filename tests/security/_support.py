"""Shared by the security tests: tree snapshots, in-process CLI runs, manifests with two models."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result

from provision.cli import main
from tests.apply_support import hub_manifest

GOOD_FILES = {"config.json": b'{"good": true}', "weights.bin": b"w" * 5000}
BAD_FILES = {"config.json": b'{"bad": 1}', "weights.bin": b"b" * 3000}


def tree(root: Path) -> dict[str, str]:
    """Every entry under ``root`` (relative path -> kind and content digest or link target)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                out[rel] = "link:" + os.readlink(path)
            elif path.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def changed(before: Mapping[str, str], after: Mapping[str, str]) -> set[str]:
    return {p for p in set(before) | set(after) if before.get(p) != after.get(p)}


def outside(paths: set[str], *allowed: str) -> set[str]:
    """``paths`` not equal to, under or a parent folder of any of ``allowed``."""
    return {p for p in paths if not any(p == a or p.startswith(a + "/") or a.startswith(p + "/") for a in allowed)}


def two_model_manifest(
    root: Path, endpoint: str, scheme: str, *, bad_repo: str = "evil/bad", good_repo: str = "org/good"
) -> Path:
    return hub_manifest(root, endpoint, scheme, bad=bad_repo, good=good_repo)


def invoke(*args: str, env: Mapping[str, str] | None = None) -> Result:
    """The CLI in-process (for generated cases: a subprocess each would be too slow)."""
    return CliRunner().invoke(main, list(args), env=dict(env or {}), catch_exceptions=True)


def exited_cleanly(result: Result, *codes: int) -> bool:
    """Exit code documented (0/1/2) and no exception other than the CLI's own exit."""
    return result.exit_code in codes and (result.exception is None or isinstance(result.exception, SystemExit))


def json_of(result: Result) -> Any:
    return json.loads(result.stdout)
