"""``checked_path`` (listing entries must stay inside the model folder), ``checked_digest`` and ``select_files``."""

from __future__ import annotations

from pathlib import Path

import pytest
from huggingface_hub.utils import filter_repo_objects  # type: ignore[attr-defined]  # a lazy export, not in __all__

from provision.errors import SourceError
from provision.files import RemoteFile, select_files
from provision.listing import checked_digest, checked_path


@pytest.mark.parametrize(
    "path",
    [
        "../x",
        "..",
        "/abs",
        "/etc/passwd",
        "a/../../x",
        "./../x",
        ".cache/huggingface/download/x.lock",
        ".cache",
        "C:/x",
        "C:x",
        "",
        ".",
        "a/..",
        "..\\x",
        "a/./b.json",
        "a//b",
        "a/",
        ".git/config",
        "sub/.GIT/hooks/x",
        ".Git",
        "a/.git./x",
        "a\x00b",
        "a\nb",
        "a\x1b[31mb",
        "a\u202eb",
        ".provision.json",
        7,
        None,
    ],
)
def test_checked_path_refuses(path: object) -> None:
    with pytest.raises(SourceError) as caught:
        checked_path(path, resource="m")
    assert caught.value.resource == "m"
    assert caught.value.hint
    assert "path" in caught.value.message  # names the field


@pytest.mark.parametrize(
    "path",
    [
        "a/b.json",
        "config.json",
        "sub/.cache/x",
        "模型/权重.bin",
        ".gitattributes",
        "a/.github/x",
        "sub/.provision.json",
    ],
)
def test_checked_path_accepts(path: str) -> None:
    assert checked_path(path, resource="m") == path


@pytest.mark.parametrize("digest", ["a" * 64 + "\n", "a" * 63, "g" * 64, " " + "a" * 64, "a" * 40])
def test_checked_digest_refuses_what_is_not_64_hex_characters(digest: str) -> None:
    with pytest.raises(SourceError, match="hex digest"):  # a final newline passed `$` alone
        checked_digest(digest, 64, resource="m", field="lfs.oid")


def test_checked_digest_lowers_the_case() -> None:
    assert checked_digest("AB" * 32, 64, resource="m", field="lfs.oid") == "ab" * 32


PATHS = [
    "config.json",
    "model.safetensors",
    "model.bin",
    "tokenizer.json",
    "tokenizer_config.json",
    "sub/config.json",
    "sub/deep/weights.bin",
    "subway/readme.md",
    "onnx/model.onnx",
    "README.md",
]
FILES = [RemoteFile(p, 1) for p in PATHS]


def _select(include: tuple[str, ...] | None, exclude: tuple[str, ...] | None) -> list[str]:
    return [f.path for f in select_files(FILES, include, exclude)]


def test_no_patterns_select_everything() -> None:
    assert _select(None, None) == PATHS


def test_include_star_crosses_folders() -> None:
    # As in huggingface_hub, "*" also matches "/": "*.json" takes sub/config.json too.
    assert _select(("*.json",), None) == ["config.json", "tokenizer.json", "tokenizer_config.json", "sub/config.json"]


def test_include_several_patterns() -> None:
    assert _select(("*.safetensors", "tokenizer*"), None) == [
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ]


def test_exclude_only() -> None:
    assert _select(None, ("*.bin", "*.onnx")) == [p for p in PATHS if not p.endswith((".bin", ".onnx"))]


def test_exclude_wins_over_include() -> None:
    assert _select(("*.json",), ("tokenizer*",)) == ["config.json", "sub/config.json"]


def test_folder_pattern_includes_the_whole_folder_only() -> None:
    assert _select(("sub/",), None) == ["sub/config.json", "sub/deep/weights.bin"]  # not subway/


def test_folder_pattern_excludes_the_whole_folder() -> None:
    assert _select(None, ("sub/", "onnx/")) == [p for p in PATHS if not p.startswith(("sub/", "onnx/"))]


def test_patterns_are_case_sensitive() -> None:
    assert _select(("readme.md",), None) == []


@pytest.mark.parametrize(
    ("include", "exclude"),
    [
        (None, None),
        (("*.json",), None),
        (None, ("*.bin",)),
        (("sub/",), ("*.bin",)),
        (("*.json", "onnx/"), ("sub/*",)),
        (("tokenizer*", "*.md"), ("README*",)),
        (("model.*",), ("*.bin",)),
        (("[a-m]*",), None),
        (("?onfig.json",), None),
    ],
)
def test_same_choice_as_huggingface_hub(include: tuple[str, ...] | None, exclude: tuple[str, ...] | None) -> None:
    expected = list(
        filter_repo_objects(
            PATHS, allow_patterns=list(include) if include else None, ignore_patterns=list(exclude) if exclude else None
        )
    )
    assert _select(include, exclude) == expected


@pytest.mark.parametrize("digest", ["../../../../tmp/x/evil", "a" * 63, "/abs", "Z" * 64])
def test_partial_file_is_named_inside_the_partial_folder_whatever_the_digest(tmp_path: Path, digest: str) -> None:
    from provision.download import PARTIAL_DIR, partial_path

    part = partial_path(tmp_path, RemoteFile("w.bin", 1, sha256=digest, git_sha1=digest))
    assert part.parent == tmp_path / PARTIAL_DIR and digest not in part.name
