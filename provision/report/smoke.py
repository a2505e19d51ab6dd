"""Rendering of ``provision smoke-test``: the streamed text, a table, ``--json``, ``--junit``.

JUnit layout (what CI systems read: one testcase per deployment)::

    <testsuites name="provision smoke-test" tests=N failures=F time=T>
      <testsuite name="provision smoke-test" tests=N failures=F time=T>
        <testcase classname="smoke.<engine>" name="<deployment>" time="<total_s>">
          <failure message="<reason>" type="SmokeTestFailure"/>     only when it failed
          <properties><property name="ttft_s" value=".."/>...</properties>
          <system-out>the answer</system-out>
        </testcase>
"""

from __future__ import annotations

import os
import re
import tempfile
import threading
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rich.table import Table

from ..smoke import SmokeResult
from . import console, literal, printable
from .text import shorten_middle, shorten_words

# result field -> JUnit property name (with its unit)
_PROPERTIES = (
    ("ttft", "ttft_s"),
    ("itl_mean", "itl_mean_s"),
    ("itl_median", "itl_median_s"),
    ("itl_p99", "itl_p99_s"),
    ("tpot", "tpot_s"),
    ("tokens_per_s", "tokens_per_s"),
    ("total_s", "total_s"),
    ("load_s", "load_s"),
)
# XML 1.0 cannot carry most control characters, which a random or broken model may emit.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


_NAME_WIDTH = 24  # deployment names past this are shortened in the middle (--json has them whole)


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f}ms"


def _s(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.2f}s"


_HEADERS = ("deployment", "engine", "result", "TTFT", "ITL", "TPOT", "tokens", "tok/s", "total", "finish")


def smoke_table(results: Sequence[SmokeResult], width: int = 80) -> Table:
    """One row per deployment; compact (box-less, short headers). Deployment names take what
    the other columns leave of ``width`` (shortened in the middle), so no cell is cut."""
    rows = [
        (
            r.deployment,
            r.engine,
            "pass" if r.passed else "FAIL",
            _ms(r.ttft),
            _ms(r.itl_mean),
            _ms(r.tpot),
            # a plain count: who counted it is the footnote's (token_footnote), never a suffix
            # that reads as a unit ("10s" next to "0.10s")
            str(r.output_tokens) if r.output_tokens else "-",
            "-" if r.tokens_per_s is None else f"{r.tokens_per_s:.1f}",
            _s(r.total_s),
            r.finish_reason or "-",
        )
        for r in results
    ]
    widths = [max([len(h)] + [len(row[i]) for row in rows]) for i, h in enumerate(_HEADERS)]
    name_width = max(10, min(widths[0], _NAME_WIDTH, width - sum(widths[1:]) - (len(_HEADERS) - 1)))
    table = Table(title="smoke test", title_justify="left", box=None, pad_edge=False, collapse_padding=True)
    for i, header in enumerate(_HEADERS):
        table.add_column(
            header, no_wrap=True, justify="right" if 3 <= i <= 8 else "left", max_width=name_width if i == 0 else None
        )
    for row in rows:
        style = "green" if row[2] == "pass" else "red"
        table.add_row(
            literal(shorten_middle(row[0], name_width)),
            literal(row[1]),
            f"[{style}]{row[2]}[/]",
            *(literal(cell) for cell in row[3:]),
        )
    return table


def embed_table(results: Sequence[SmokeResult]) -> Table:
    """``task: embed`` rows: their own columns, so vector checks never sit under chat headers."""
    table = Table(title="smoke test: embeddings", title_justify="left", box=None, pad_edge=False, collapse_padding=True)
    for header in ("deployment", "engine", "result"):
        table.add_column(header, no_wrap=True)
    for header in ("dim", "norm", "cos+", "cos-", "latency", "texts/s", "tokens"):
        table.add_column(header, justify="right", no_wrap=True)
    for r in results:
        norms = (
            f"{min(r.norms):.3f}"
            if r.norms and max(r.norms) - min(r.norms) < 5e-4
            else (f"{min(r.norms):.2f}-{max(r.norms):.2f}" if r.norms else "-")
        )
        table.add_row(
            literal(r.deployment),
            literal(r.engine),
            "[green]pass[/]" if r.passed else "[red]FAIL[/]",
            "-" if r.dimension is None else str(r.dimension),
            norms,
            "-" if r.cos_positive is None else f"{r.cos_positive:.3f}",
            "-" if r.cos_negative is None else f"{r.cos_negative:.3f}",
            _ms(r.total_s),
            "-" if r.texts_per_s is None else f"{r.texts_per_s:.1f}",
            "-" if r.input_tokens is None else str(r.input_tokens),
        )
    return table


def print_smoke(results: Sequence[SmokeResult]) -> None:
    """The tables (chat, embeddings), then one line per failure with its reason."""
    chats = [r for r in results if r.task != "embed"]
    embeds = [r for r in results if r.task == "embed"]
    if chats or not embeds:
        console().print(smoke_table(chats, console().width))
    if embeds:
        console().print(embed_table(embeds))
    for r in embeds:
        if r.truncated:
            console().print(
                f"[yellow]! {literal(r.deployment)}[/]: inputs {list(r.truncated)} were cut to the "
                "model's maximum length",
                markup=True,
                soft_wrap=True,
            )
    for r in results:
        if not r.passed:
            reason = shorten_words(r.reason or "failed", console().width - 4)
            console().print(f"[red]✗ {literal(r.deployment)}[/]: {literal(reason)}", markup=True)
    passed = sum(r.passed for r in results)
    console().print(f"{passed} of {len(results)} passed.")
    for line in token_footnote(results):
        console().print(printable(line), markup=False)


_COUNTED_BY = {"tokenizer": "by the model's tokenizer", "chunks": "as streamed chunks (no tokenizer)"}


def token_footnote(results: Sequence[SmokeResult]) -> list[str]:
    """Who counted the tokens column: one short line, plus one per other way of counting."""
    counted = [r for r in results if r.output_tokens]
    if not counted:
        return []
    others: dict[str, list[str]] = {}
    for r in counted:
        if r.token_source != "server":
            others.setdefault(r.token_source, []).append(r.deployment)
    if not others:
        return ["tokens: counted by the server (or engine)"]
    lines = ["tokens: counted by the server (or engine), except"]
    for source, names in others.items():
        lines.append(f"  {_COUNTED_BY.get(source, source)}: {', '.join(names)}")
    return lines


class StreamPrinter:
    """An ``on_text`` callback for ``run_many``.

    With one deployment (``prefix=False``) text is printed as it arrives. With several, it
    is printed by whole lines as ``name| line``, so concurrent answers do not interleave
    mid-line; call ``finish()`` at the end for the last, unterminated lines.
    """

    def __init__(self, *, prefix: bool) -> None:
        self.prefix = prefix
        self._lock = threading.Lock()
        self._pending: dict[str, str] = {}

    def __call__(self, name: str, text: str) -> None:
        with self._lock:
            if not self.prefix:
                console().out(printable(text, multiline=True), end="", highlight=False)
                return
            *lines, rest = (self._pending.get(name, "") + printable(text, multiline=True)).split("\n")
            for line in lines:
                console().out(f"{name}| {line}", highlight=False)
            self._pending[name] = rest

    def finish(self) -> None:
        with self._lock:
            if not self.prefix:
                console().out("", highlight=False)  # end the streamed answer's line
            for name, rest in self._pending.items():
                if rest:
                    console().out(f"{name}| {rest}", highlight=False)
            self._pending.clear()


def smoke_dict(results: Sequence[SmokeResult]) -> dict[str, Any]:
    """The ``--json`` document: overall pass, counts and every result's fields (seconds)."""
    return {
        "passed": all(r.passed for r in results),
        "total": len(results),
        "failed": sum(not r.passed for r in results),
        "results": [asdict(r) for r in results],
    }


def junit_xml(results: Sequence[SmokeResult]) -> ET.ElementTree:
    failures = str(sum(not r.passed for r in results))
    elapsed = f"{max((r.total_s or 0) + (r.load_s or 0) for r in results):.3f}" if results else "0"
    counts = {"tests": str(len(results)), "failures": failures, "errors": "0", "time": elapsed}
    root = ET.Element("testsuites", {"name": "provision smoke-test", **counts})
    suite = ET.SubElement(root, "testsuite", {"name": "provision smoke-test", **counts})
    for r in results:
        case = ET.SubElement(
            suite,
            "testcase",
            {"classname": f"smoke.{r.engine or 'unknown'}", "name": r.deployment, "time": f"{r.total_s or 0:.3f}"},
        )
        if not r.passed:
            message = _NOT_XML.sub("", r.reason or "failed")
            ET.SubElement(case, "failure", {"message": message, "type": "SmokeTestFailure"})
        properties = ET.SubElement(case, "properties")
        for field, name in _PROPERTIES:
            value = getattr(r, field)
            if value is not None:
                ET.SubElement(properties, "property", {"name": name, "value": f"{value:.6f}"})
        for key in (
            "output_tokens",
            "token_source",
            "finish_reason",
            "task",
            "dimension",
            "cos_positive",
            "cos_negative",
            "texts_per_s",
            "input_tokens",
        ):
            if getattr(r, key) is not None:
                value = _NOT_XML.sub("", str(getattr(r, key)))  # finish_reason is the server's text
                ET.SubElement(properties, "property", {"name": key, "value": value})
        ET.SubElement(case, "system-out").text = _NOT_XML.sub("", r.text)
    ET.indent(root)
    return ET.ElementTree(root)


def write_junit(results: Sequence[SmokeResult], path: str | os.PathLike[str]) -> None:
    """Write the JUnit XML file atomically (a reader never sees half a file)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            junit_xml(results).write(out, encoding="utf-8", xml_declaration=True)
        os.replace(tmp, target)
    except BaseException:
        os.unlink(tmp)
        raise
