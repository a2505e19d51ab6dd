"""Reading a manifest file and its YAML, bounded: a hostile file fails fast, with file:line.

- The file must be a regular file (not a FIFO, a device such as ``/dev/zero``, a directory
  or a symlink loop) of at most :data:`MAX_MANIFEST_BYTES`; it is opened non-blocking, so a
  FIFO swapped in after the check cannot hang the read either.
- The YAML is parsed by libyaml (PyYAML's C loader) where installed: the pure-Python
  scanner needs seconds for a 1 MiB file. Its events are counted first, so a document
  of more than :data:`MAX_NODES` values is refused before any node is built.
- Aliases share nodes, so a few lines of YAML can stand for billions of nodes (an "alias
  bomb"); each node is counted as often as it is reachable, and more than
  :data:`MAX_NODES` is refused before anything walks the tree.
- Nesting deeper than :data:`MAX_DEPTH` is refused the same way: whatever walks the values
  afterwards (the ``${VAR}`` expansion, pydantic) recurses, and must not hit Python's limit.
- Duplicate keys and keys that are lists or mappings are errors; each field's line is kept
  (by pydantic's field path) for the messages.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Hashable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from .errors import ManifestError

MAX_MANIFEST_BYTES = 1 << 20  # 1 MiB; real manifests are a few KiB
MAX_NODES = 10_000  # values, aliases expanded; manifests/dev.yaml has about 150
MAX_DEPTH = 64  # nested lists and mappings, aliases expanded; a manifest nests about 6 deep
if TYPE_CHECKING:
    _BaseLoader = yaml.SafeLoader  # libyaml's CSafeLoader has the same interface
else:
    _BaseLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
# A field's path as pydantic reports it: mapping keys and list indexes.
FieldPath = tuple[str | int, ...]
_YAML_HINT = "fix the YAML at that line: check indentation, quotes and brackets"


def read_manifest_text(file: Path) -> str:
    """The manifest's text; :class:`ManifestError` for anything but a small UTF-8 regular file."""
    try:
        info = os.stat(file)  # follows links: a loop is ELOOP here
        if not stat.S_ISREG(info.st_mode):
            raise _not_a_file(file, info.st_mode)
        if info.st_size > MAX_MANIFEST_BYTES:
            raise _too_big(file)
        fd = os.open(file, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):  # replaced between the stat and the open
                raise _not_a_file(file, os.fstat(fd).st_mode)
            with os.fdopen(fd, "rb", closefd=False) as stream:
                data = stream.read(MAX_MANIFEST_BYTES + 1)
        finally:
            os.close(fd)
    except FileNotFoundError:
        raise ManifestError(
            f"no such manifest: {file}", hint="pass the manifest's path, e.g. `provision apply manifests/demo.yaml`"
        ) from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ManifestError(
                "cannot read the manifest: a symlink loop",
                file=str(file),
                hint="point the link at the manifest file itself",
            ) from None
        raise ManifestError(
            f"cannot read the manifest: {exc.strerror or exc}",
            file=str(file),
            hint="check the path and its permissions",
        ) from None
    if len(data) > MAX_MANIFEST_BYTES:
        raise _too_big(file)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ManifestError(
            f"not UTF-8 text (byte 0x{data[exc.start]:02x})",
            file=str(file),
            line=line,
            hint="save the manifest as UTF-8",
        ) from None


def _not_a_file(file: Path, mode: int) -> ManifestError:
    kind = (
        "a directory"
        if stat.S_ISDIR(mode)
        else "a FIFO"
        if stat.S_ISFIFO(mode)
        else "a device"
        if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
        else "a socket"
        if stat.S_ISSOCK(mode)
        else "not a regular file"
    )
    return ManifestError(
        f"this is {kind}, not a manifest file",
        file=str(file),
        hint="pass the path of a YAML manifest, e.g. `provision apply manifests/demo.yaml`",
    )


def _too_big(file: Path | str) -> ManifestError:
    return ManifestError(
        f"the manifest is over the {MAX_MANIFEST_BYTES >> 20} MiB limit",
        file=str(file),
        hint="a manifest is a few KiB: remove what it does not need, or split it",
    )


def check_text_size(text: str, file: str) -> None:
    if len(text) > MAX_MANIFEST_BYTES or len(text.encode("utf-8", "surrogatepass")) > MAX_MANIFEST_BYTES:
        raise _too_big(file)


# -- YAML --------------------------------------------------------------------------------------


class _LineLoader(_BaseLoader):
    """SafeLoader that rejects duplicate keys and keys that are not plain values."""


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue  # `<<: *base`; construct_mapping merges it, explicit keys override
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, Hashable):
            raise yaml.constructor.ConstructorError(
                None, None, "a key must be a plain value, not a list or mapping", key_node.start_mark
            )
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"duplicate key {key!r} (first defined on line {seen[key]})",
                key_node.start_mark,
            )
        seen[key] = key_node.start_mark.line + 1
    return loader.construct_mapping(node, deep=deep)


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_yaml(text: str, *, file: str) -> tuple[Any, dict[FieldPath, int]]:
    """(data, field path -> line) of one YAML document; :class:`ManifestError` on bad YAML."""
    check_text_size(text, file)
    loader: _LineLoader | None = None
    try:
        _count_values(text, file)
        loader = _LineLoader(text)  # the reader checks every character here
        node = loader.get_single_node()
        if node is None:
            return None, {}
        _check_budget(node, file)
        lines = _line_map(node)
        return loader.construct_document(node), lines
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        problem = exc.problem or str(exc)
        if exc.context and exc.context_mark and exc.context_mark.line + 1 != line:
            # e.g. an unclosed quote or bracket: the problem shows only at the end
            problem += f" ({exc.context} started on line {exc.context_mark.line + 1})"
        hint = "remove or rename one of them" if problem.startswith("duplicate key") else _YAML_HINT
        raise ManifestError(f"invalid YAML: {problem}", file=file, line=line, hint=hint) from None
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow
        line = text.count("\n", 0, exc.position) + 1
        raise ManifestError(
            f"invalid YAML: character U+{exc.character:04X} is not allowed",
            file=file,
            line=line,
            hint="remove control characters; save the file as UTF-8",
        ) from None
    except RecursionError:  # nesting thousands deep
        raise ManifestError("invalid YAML: nested too deeply", file=file, hint=_YAML_HINT) from None
    finally:
        if loader is not None:
            loader.dispose()


def _count_values(text: str, file: str) -> None:
    """Refuse more than MAX_NODES values as written (before aliases), from the parser's events."""
    count = 0
    for event in yaml.parse(text, Loader=_BaseLoader):
        if isinstance(event, yaml.NodeEvent):
            count += 1
            if count > MAX_NODES:
                raise _too_many(file, event.start_mark.line + 1 if event.start_mark else None)


def _too_many(file: str, line: int | None) -> ManifestError:
    return ManifestError(
        f"the YAML holds more than {MAX_NODES} values (aliases count each time they repeat)",
        file=file,
        line=line,
        hint="a manifest needs far fewer: write the values out, or use fewer &anchors and *aliases",
    )


def _check_budget(root: yaml.Node, file: str) -> None:
    """Refuse a document whose aliases expand past MAX_NODES or MAX_DEPTH (or refer to a node inside itself).

    Each distinct node is sized once (shared nodes are memoised), so this is linear in the
    text however many times the aliases multiply it.
    """
    sizes: dict[int, int] = {}
    depths: dict[int, int] = {}  # levels of nesting at and below a node
    open_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        children = _children(node)
        if done:
            open_nodes.discard(key)
            sizes[key] = 1 + sum(sizes[id(child)] for child in children)
            if sizes[key] > MAX_NODES:
                raise _too_many(file, node.start_mark.line + 1)
            depths[key] = (1 + max(depths[id(child)] for child in children)) if children else 0
            if depths[key] > MAX_DEPTH:
                raise _too_deep(file, node.start_mark.line + 1)
            continue
        if key in sizes:
            continue
        if key in open_nodes:
            raise yaml.composer.ComposerError(None, None, "an alias refers to a node that contains it", node.start_mark)
        open_nodes.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in children if id(child) not in sizes)


def _too_deep(file: str, line: int) -> ManifestError:
    return ManifestError(
        f"invalid YAML: nested more than {MAX_DEPTH} levels deep", file=file, line=line, hint=_YAML_HINT
    )


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _line_map(
    node: yaml.Node | None, path: FieldPath = (), out: dict[FieldPath, int] | None = None
) -> dict[FieldPath, int]:
    """Field path (as pydantic reports it) -> 1-based line of that field in the file.

    Bounded by :func:`_check_budget`, which ran first (and refused self-containing aliases).
    """
    out = {} if out is None else out
    if node is None:
        return out
    out.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                continue  # the constructor rejects it
            key_path = (*path, key_node.value)
            out[key_path] = key_node.start_mark.line + 1
            _line_map(value_node, key_path, out)
            out[key_path] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _line_map(item, (*path, index), out)
    return out
