"""The part of a failed server's log that explains the failure (pure text in, text out).

vLLM reports a failed start at the end of its log with a generic line ("Engine core
initialization failed. See root cause above", or argparse's usage screen before the error),
so the last lines alone rarely say why. The excerpt is the first error and its context:

- the first line that looks like an error (``Traceback``, ``ERROR``, ``error:``, an
  ``...Error:`` / ``...Exception:`` line), with the two lines before it;
- when that is (or is followed by) a traceback, its end: the exception line that closes it,
  which is the root cause (long tracebacks are cut in the middle);
- the last lines of the log, where the process said how it ended.

Lines vLLM's worker processes prefix (``(EngineCore_DP0 pid=12) ERROR ...``) are matched
with the prefix removed.
"""

from __future__ import annotations

import re

TAIL = 8  # last lines always shown
CONTEXT = 2  # lines before the first error
TRACEBACK_HEAD = 4  # lines of a long traceback shown before the cut
TRACEBACK_END = 6  # lines shown at its end (the root cause among them)
NO_ERROR_TAIL = 20  # with no recognisable error: the tail, as before

_PREFIX = re.compile(r"^\([\w.-]+ pid=\d+\)\s?")
_ERROR = re.compile(
    r"Traceback \(most recent call last\)|\b(ERROR|CRITICAL|FATAL)\b|\berror:|^[\w.]*(Error|Exception)\b.*:"
)
_EXCEPTION_LINE = re.compile(r"^(\w+\.)*\w*(Error|Exception|Exit|Interrupt)\b(:|$)")


def _plain(line: str) -> str:
    return _PREFIX.sub("", line)


def _traceback_end(lines: list[str], start: int) -> int:
    """Index of the exception line closing the traceback that starts at ``start`` (else start)."""
    for index in range(start + 1, len(lines)):
        text = _plain(lines[index])
        # A logger prefix ("ERROR 12-01 10:00:00 [core.py:1] ") may precede it on vLLM's lines.
        text = re.sub(r"^(ERROR|CRITICAL)\s+\S+\s+\S+\s+\[[^]]*\]\s*", "", text)
        if _EXCEPTION_LINE.match(text):
            return index
    return start


def failure_excerpt(log: str) -> list[str]:
    """The lines of ``log`` that explain a failure, with "..." where lines were left out."""
    lines = log.rstrip().splitlines()
    first = next((i for i, line in enumerate(lines) if _ERROR.search(_plain(line))), None)
    if first is None:
        return lines[-NO_ERROR_TAIL:]
    keep: set[int] = set(range(max(0, first - CONTEXT), min(first + 3, len(lines))))
    # "EngineCore failed to start." is followed by the traceback that says why.
    start = next(
        (i for i in range(first, min(first + 3, len(lines))) if "Traceback (most recent call last)" in lines[i]), None
    )
    if start is not None:
        end = _traceback_end(lines, start)
        if end - start <= TRACEBACK_HEAD + TRACEBACK_END:
            keep.update(range(start, end + 1))
        else:
            keep.update(range(start, start + TRACEBACK_HEAD))
            keep.update(range(end - TRACEBACK_END + 1, end + 1))
    keep.update(range(max(0, len(lines) - TAIL), len(lines)))
    shown: list[str] = []
    previous = -1
    for index in sorted(keep):
        if index != previous + 1:
            shown.append(f"... ({index - previous - 1} lines) ...")
        shown.append(lines[index])
        previous = index
    return shown
