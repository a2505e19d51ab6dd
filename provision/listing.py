"""Validation of what a hub listing (or a lock file) says about a file, before any use.

A listing comes from the network and a lock file from anyone with write access to the repo:
neither is trusted. Every path, size and digest passes through here before it names a file,
a partial file or a URL. A bad field raises :class:`MalformedListingError` naming the field
and the value (escaped), so the one model fails and the others proceed.
"""

from __future__ import annotations

import posixpath
import re
import unicodedata
from collections.abc import Iterable
from typing import Any
from urllib.parse import urljoin, urlsplit

from .errors import SourceError

_HEX = {64: re.compile(r"^[0-9a-f]{64}$"), 40: re.compile(r"^[0-9a-f]{40}$")}
MAX_PATH_LENGTH = 4096
MAX_FILE_SIZE = 1 << 50  # 1 PiB: no model file is larger; a bigger "size" is a lie
# Folders a listed file may not enter: git's (hooks, config with core.fsmonitor run code on
# the next `git` in the folder) and provision's own bookkeeping.
_FORBIDDEN_COMPONENT = ".git"
_RESERVED_TOP = (".cache", ".provision.json")


class MalformedListingError(SourceError):
    default_hint = (
        "the hub's listing is malformed or hostile; nothing of this model was written. Report it, "
        "or pin another revision"
    )


def shown(value: Any, limit: int = 80) -> str:
    """``value`` as a short, escaped literal: safe to print whatever the hub sent."""
    text = ascii(value) if isinstance(value, str) else ascii(repr(value))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _bad(field: str, value: Any, why: str, resource: str | None) -> MalformedListingError:
    return MalformedListingError(f"listing field {field} = {shown(value)}: {why}", resource=resource)


def checked_path(value: Any, *, resource: str | None, field: str = "path") -> str:
    """A listed path that stays inside the model folder: relative, normalized, no ``..``, no
    ``.git`` component (any case), no control characters, not provision's bookkeeping."""
    if not isinstance(value, str) or not value:
        raise _bad(field, value, "not a non-empty string", resource)
    if len(value) > MAX_PATH_LENGTH:
        raise _bad(field, value, f"longer than {MAX_PATH_LENGTH} characters", resource)
    if any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in value):
        raise _bad(field, value, "contains a control character", resource)
    if "\\" in value:
        raise _bad(field, value, "contains a backslash", resource)
    if value.startswith("/") or re.match(r"^[A-Za-z]:", value):
        raise _bad(field, value, "is absolute (outside the model folder)", resource)
    parts = value.split("/")
    if any(p in ("", ".", "..") for p in parts) or posixpath.normpath(value) != value:
        raise _bad(
            field, value, "is outside the model folder or not normalized (an empty, '.' or '..' component)", resource
        )
    if any(p.casefold().rstrip(". ") == _FORBIDDEN_COMPONENT for p in parts):
        raise _bad(field, value, "has a .git component (git would run what it holds)", resource)
    if parts[0] in _RESERVED_TOP:
        raise _bad(field, value, "is provision's own bookkeeping", resource)
    return value


def checked_size(value: Any, *, resource: str | None, field: str = "size") -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_FILE_SIZE:
        raise _bad(field, value, f"not an integer from 0 to {MAX_FILE_SIZE}", resource)
    return value


def checked_digest(value: Any, length: int, *, resource: str | None, field: str, optional: bool = True) -> str | None:
    """A lower-case hex digest of ``length`` characters (sha256: 64, git sha1: 40)."""
    if value is None and optional:
        return None
    if isinstance(value, str) and _HEX[length].fullmatch(value.lower()):
        return value.lower()
    raise _bad(field, value, f"not a {length}-character hex digest", resource)


MAX_PAGES = 1000  # the Hub pages trees by 1000 entries: a million files is no model


def origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme.lower(), parts.netloc.lower()


class Pagination:
    """Follows ``Link: <...>; rel="next"`` as an untrusted pointer: a page cap, no page read
    twice, and the token only for the first page's origin (as for redirects)."""

    def __init__(self, first: str, *, resource: str, max_pages: int = MAX_PAGES) -> None:
        self._origin = origin(first)
        self._seen = {first}
        self._resource = resource
        self._max_pages = max_pages

    def credentials(self, url: str) -> bool:
        return origin(url) == self._origin

    def next(self, header: str, base: str) -> str | None:
        url = next_link(header, base)
        if url is None:
            return None
        if origin(url)[0] not in ("http", "https"):
            raise _bad("Link rel=next", url, "not an http(s) URL", self._resource)
        if url in self._seen:
            raise _bad("Link rel=next", url, "points to a page already read (a loop)", self._resource)
        if len(self._seen) >= self._max_pages:
            raise _bad("Link rel=next", url, f"more than {self._max_pages} pages", self._resource)
        self._seen.add(url)
        return url


def next_link(header: str, base: str) -> str | None:
    """The ``rel="next"`` URL of a ``Link`` header, if any (absolute, or relative to ``base``)."""
    for part in header.split(","):
        if 'rel="next"' in part and "<" in part and ">" in part:
            return urljoin(base, part[part.index("<") + 1 : part.index(">")])
    return None


def check_record_paths(paths: Iterable[str]) -> None:
    """For the lock's and the state's validators: every recorded path is one a listing could
    have given (``ValueError`` naming the first that is not; pydantic reports it with its field)."""
    for path in paths:
        try:
            checked_path(path, resource=None)
        except MalformedListingError as exc:
            raise ValueError(f"unsafe path {exc.message.partition(' = ')[2]}") from None
