"""Narrowing for typed tests: a value the code under test must have produced, a JSON object read back."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def known(value: T | None) -> T:
    """``value``; fails the test where it is None (an estimate, a field, a lookup that came back empty)."""
    assert value is not None, "expected a value, got None"
    return value


def json_object(source: str | bytes | Path) -> dict[str, Any]:
    """The JSON object in ``source`` (text, or a file to read); fails the test for any other JSON value."""
    data = json.loads(source.read_text() if isinstance(source, Path) else source)
    assert isinstance(data, dict), f"expected a JSON object, got {type(data).__name__}"
    return data


def instance(value: object, kind: type[T]) -> T:
    """``value`` as a ``kind`` (a manifest's deployment of one engine, say); fails the test otherwise."""
    assert isinstance(value, kind), f"expected a {kind.__name__}, got {type(value).__name__}"
    return value
