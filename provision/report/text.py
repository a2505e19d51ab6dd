"""Making values fit a table column without folding a word in two.

Rich wraps a cell at spaces, but folds a word longer than its column mid-word
(``hf://deep`` / ``seek-ai/D``). Values are shortened first instead, with an ellipsis in
the middle, so what is left still names the thing: the scheme and the repository's tail
of a source, the start and the end of a path. ``--json`` always carries the full value.
"""

from __future__ import annotations

ELLIPSIS = "…"


def shorten_middle(value: str, width: int) -> str:
    """``value`` in at most ``width`` characters: its start and end around an ellipsis.

    A source or URL keeps its scheme (``hf://``) and as much of its tail as fits, from a
    ``/`` when the last segment fits whole: ``hf://…/DeepSeek-R1-Distill-Qwen-1.5B``.
    """
    if len(value) <= width:
        return value
    if width < 2:
        return ELLIPSIS[:width]
    scheme, sep, _ = value.partition("://")
    # some of the start (the scheme, when there is one), most of the end (the name)
    head = scheme + sep if sep and len(scheme + sep) + 4 <= width else value[: (width - 1) // 3]
    room = width - len(head) - 1
    tail = value[-room:]
    last = "/" + value.rsplit("/", 1)[-1]
    if "/" in value[len(head) :] and room // 2 < len(last) <= room:
        tail = last
    return f"{head}{ELLIPSIS}{tail}"


def shorten_words(text: str, width: int) -> str:
    """``text`` with every space-separated word longer than ``width`` shortened in the middle,
    so wrapping it in a column of ``width`` only ever breaks at spaces."""
    return " ".join(shorten_middle(word, width) for word in text.split(" "))


def wrap_words(text: str, width: int, *, indent: str = "") -> str:
    """``text`` broken into lines of at most ``width`` at spaces only; a word longer than a line
    (a long path to copy) stays whole on its own line rather than folded. Print the result
    with ``soft_wrap=True`` so rich does not wrap it again."""
    import textwrap

    return textwrap.fill(
        text, width=max(width, 20), subsequent_indent=indent, break_long_words=False, break_on_hyphens=False
    )
