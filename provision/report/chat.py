"""Rendering of ``provision chat``: answers on stdout; notes, stats and errors on stderr.

At a terminal, reasoning (``<think>...</think>``) is dimmed and each answer ends with a new
prompt; through a pipe, stdout carries the answers only, one after another, each ending
with a newline. Model text is outside text: control characters other than newline and tab
are shown escaped, so an answer cannot move the cursor or retitle the terminal.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import TextIO

from ..errors import ProvisionError
from ..smoke import StreamMetrics, failure_reason
from . import printable

PROMPT = ">>> "
_DIM, _UNDIM = "\x1b[2m", "\x1b[22m"


class ChatPrinter:
    """The session's output (see :class:`provision.chat.ChatOutput`)."""

    def __init__(self, *, terminal: bool, out: TextIO | None = None, err: TextIO | None = None) -> None:
        self.terminal = terminal
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self._line_open = False

    def piece(self, kind: str, text: str) -> None:
        text = printable(text, multiline=True)  # the model's text: its lines and tabs stay
        if kind == "thinking" and self.terminal:
            text = f"{_DIM}{text}{_UNDIM}"
        self.out.write(text)
        self.out.flush()
        self._line_open = not text.endswith("\n")

    def answer(self, text: str) -> None:
        self.out.write(printable(text, multiline=True) + "\n")
        self.out.flush()

    def end_answer(self) -> None:
        self.out.write("\n")
        self.out.flush()
        self._line_open = False

    def interrupted(self) -> None:
        self._close_line()
        self._err("(answer stopped; the session goes on)")

    def stats(self, metrics: StreamMetrics) -> None:
        ttft = "-" if metrics.ttft is None else f"{metrics.ttft:.2f} s"
        rate = "-" if metrics.tokens_per_s is None else f"{metrics.tokens_per_s:.1f}"
        self._err(
            f"TTFT {ttft} · {rate} tokens/s · {metrics.output_tokens} tokens ({metrics.token_source}) "
            f"· {metrics.total_s:.2f} s"
        )

    def error(self, exc: ProvisionError) -> None:
        self._close_line()
        self._err(f"error: {printable(failure_reason(exc))}")

    def note(self, text: str) -> None:
        self._err(text)

    def lines(self) -> Iterator[str]:
        """User lines: read with a prompt at a terminal (Ctrl-C there clears the line), else stdin's lines."""
        if not self.terminal:
            yield from sys.stdin
            return
        while True:
            try:
                yield input(PROMPT)
            except KeyboardInterrupt:
                self.out.write("\n")
            except EOFError:
                self.out.write("\n")
                return

    def _close_line(self) -> None:
        if self._line_open:
            self.out.write("\n")
            self.out.flush()
            self._line_open = False

    def _err(self, text: str) -> None:
        if self.terminal:
            text = f"{_DIM}{text}{_UNDIM}"
        self.err.write(text + "\n")
        self.err.flush()
