"""The progress sink the reconciler reports to; :mod:`provision.report` renders it.

Sources, deployment backends and the reconciler never print: they call a :class:`Progress`. The CLI passes a rich
implementation on a terminal and :class:`NullProgress` for ``--json`` or when not a TTY.
"""

from __future__ import annotations

from typing import Protocol, Self


class Progress(Protocol):
    """Used as a context manager around the work it reports on (a live display starts/stops)."""

    def __enter__(self) -> Self: ...

    def __exit__(self, *exc: object) -> None: ...

    def model_started(self, name: str, files: int, total_bytes: int) -> None: ...

    def advance(self, name: str, nbytes: int) -> None: ...

    def file_done(self, name: str, path: str) -> None: ...

    def model_done(self, name: str, ok: bool) -> None: ...

    def layer(self, name: str, what: str, done: int, total: int) -> None:
        """Per-part progress from a server (an Ollama layer, an image pull)."""
        ...

    def status(self, name: str, message: str) -> None:
        """A one-line update (e.g. "waiting for /health")."""
        ...


class NullProgress:
    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def model_started(self, name: str, files: int, total_bytes: int) -> None:
        pass

    def advance(self, name: str, nbytes: int) -> None:
        pass

    def file_done(self, name: str, path: str) -> None:
        pass

    def model_done(self, name: str, ok: bool) -> None:
        pass

    def layer(self, name: str, what: str, done: int, total: int) -> None:
        pass

    def status(self, name: str, message: str) -> None:
        pass
