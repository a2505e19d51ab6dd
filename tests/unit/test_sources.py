"""The one list of source schemes, its parser (provision/sources/__init__.py) and the state's use of it."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from provision.sources import FILE_SCHEMES, HUB_SCHEMES, SOURCE_SCHEMES, parse_source
from provision.state import ManifestRecords


@pytest.mark.parametrize(
    ("source", "parsed"),
    [
        ("hf://Qwen/Qwen3-0.6B", ("hf", "Qwen/Qwen3-0.6B")),
        ("ms://qwen/Qwen3-0.6B", ("ms", "qwen/Qwen3-0.6B")),
        ("ollama://qwen3:0.6b", ("ollama", "qwen3:0.6b")),
        ("file://./models/x://y", ("file", "./models/x://y")),  # only the first :// splits
    ],
)
def test_a_source_is_its_scheme_and_location(source: str, parsed: tuple[str, str]) -> None:
    assert parse_source(source) == parsed


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("s3://bucket/model", "unknown source 's3://bucket/model': expected one of hf://..., ms://..., ollama://..."),
        ("hf:/Qwen/Qwen3", "unknown source"),
        ("hf://", "unknown source"),
        ("hf://Qwen", "'hf://Qwen': expected hf://owner/name"),
        ("ms://a/b/c", "expected ms://owner/name"),
        ("hf://../x", "'..' is not a repository name"),
        ("ollama://Bad Name", "'Bad Name' is not a valid Ollama model name"),
        ("hf://Qwen/Qwen3\n", "expected hf://owner/name"),  # `$` alone matched before the newline
        ("ms://iic/gte-l\u00e4rge", "expected ms://owner/name"),  # `\w` took any script's letters
    ],
)
def test_a_source_outside_the_list_says_what_is_accepted(source: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_source(source)
    assert message in str(caught.value)


def test_the_lists_agree() -> None:
    assert set(HUB_SCHEMES) < set(FILE_SCHEMES) < set(SOURCE_SCHEMES)
    assert set(SOURCE_SCHEMES) - set(FILE_SCHEMES) == {"ollama"}  # the one kept by a server


@pytest.mark.parametrize("source", ["0", "s3://bucket/model", ""])
def test_a_state_record_from_no_known_source_is_refused(source: str) -> None:
    """Else a tampered record reached the source lookup as an unknown scheme (a KeyError)."""
    with pytest.raises(ValidationError, match="unknown source"):
        ManifestRecords.model_validate({"models": {"m": {"source": source}}})
