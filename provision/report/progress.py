"""The download progress bars; imported only when stdout is a terminal (rich.progress costs
about 9 ms of start-up that a piped or ``--json`` run does not need)."""

from __future__ import annotations

import threading
from typing import Self

from rich.progress import (
    BarColumn,
    DownloadColumn,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.progress import Progress as RichProgressBar

from . import console, literal


class RichProgress:
    """Download bars (files, bytes, rate, ETA) per model and one-line status messages."""

    def __init__(self) -> None:
        self._bar = RichProgressBar(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[files]}"),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=console(),
            transient=False,
        )
        self._tasks: dict[str, TaskID] = {}
        self._files: dict[str, list[int]] = {}
        self._lock = threading.Lock()

    def __enter__(self) -> Self:
        self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._bar.stop()

    def model_started(self, name: str, files: int, total_bytes: int) -> None:
        with self._lock:
            self._files[name] = [0, files]
            self._tasks[name] = self._bar.add_task(literal(name), total=total_bytes, files=f"0/{files} files")

    def advance(self, name: str, nbytes: int) -> None:
        task = self._tasks.get(name)
        if task is not None:
            self._bar.advance(task, nbytes)

    def file_done(self, name: str, path: str) -> None:
        with self._lock:
            counts = self._files.get(name)
            if counts:
                counts[0] += 1
                self._bar.update(self._tasks[name], files=f"{counts[0]}/{counts[1]} files")

    def model_done(self, name: str, ok: bool) -> None:
        task = self._tasks.get(name)
        if task is not None:
            mark = "[green]✓[/]" if ok else "[red]✗[/]"
            self._bar.update(task, description=f"{mark} {literal(name)}")

    def layer(self, name: str, what: str, done: int, total: int) -> None:
        key = f"{name}:{what}"
        with self._lock:
            if key not in self._tasks:
                self._tasks[key] = self._bar.add_task(literal(f"{name} {what}"), total=total or None, files="")
        self._bar.update(self._tasks[key], completed=done, total=total or None)

    def status(self, name: str, message: str) -> None:
        self._bar.console.print(f"[dim]{literal(name)}:[/] {literal(message)}", soft_wrap=True)
