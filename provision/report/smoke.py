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
from . import console

# result field -> JUnit property name (with its unit)
_PROPERTIES = (("ttft", "ttft_s"), ("itl_mean", "itl_mean_s"), ("itl_median", "itl_median_s"),
               ("itl_p99", "itl_p99_s"), ("tpot", "tpot_s"), ("tokens_per_s", "tokens_per_s"),
               ("total_s", "total_s"), ("load_s", "load_s"))
# XML 1.0 cannot carry most control characters, which a random or broken model may emit.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f}ms"


def _s(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.2f}s"


def smoke_table(results: Sequence[SmokeResult]) -> Table:
    """One row per deployment; compact (box-less, short headers) so it fits 80 columns."""
    table = Table(title="smoke test", title_justify="left", box=None, pad_edge=False, collapse_padding=True)
    table.add_column("deployment", no_wrap=True)
    table.add_column("engine", no_wrap=True)
    table.add_column("result", no_wrap=True)
    for header in ("TTFT", "ITL", "TPOT", "tokens", "tok/s", "total"):
        table.add_column(header, justify="right", no_wrap=True)
    table.add_column("finish", no_wrap=True)
    for r in results:
        # the token count's source: s = server/engine, t = tokenizer, c = chunks (see --json)
        tokens = f"{r.output_tokens}{r.token_source[0]}" if r.output_tokens else "-"
        table.add_row(
            r.deployment,
            r.engine,
            "[green]pass[/]" if r.passed else "[red]FAIL[/]",
            _ms(r.ttft),
            _ms(r.itl_mean),
            _ms(r.tpot),
            tokens,
            "-" if r.tokens_per_s is None else f"{r.tokens_per_s:.1f}",
            _s(r.total_s),
            r.finish_reason or "-",
        )
    return table


def embed_table(results: Sequence[SmokeResult]) -> Table:
    """``task: embed`` rows: their own columns, so vector checks never sit under chat headers."""
    table = Table(title="smoke test: embeddings", title_justify="left", box=None, pad_edge=False,
                  collapse_padding=True)
    for header in ("deployment", "engine", "result"):
        table.add_column(header, no_wrap=True)
    for header in ("dim", "norm", "cos+", "cos-", "latency", "texts/s", "tokens"):
        table.add_column(header, justify="right", no_wrap=True)
    for r in results:
        norms = f"{min(r.norms):.3f}" if r.norms and max(r.norms) - min(r.norms) < 5e-4 else (
            f"{min(r.norms):.2f}-{max(r.norms):.2f}" if r.norms else "-")
        table.add_row(
            r.deployment, r.engine, "[green]pass[/]" if r.passed else "[red]FAIL[/]",
            "-" if r.dimension is None else str(r.dimension), norms,
            "-" if r.cos_positive is None else f"{r.cos_positive:.3f}",
            "-" if r.cos_negative is None else f"{r.cos_negative:.3f}",
            _ms(r.total_s), "-" if r.texts_per_s is None else f"{r.texts_per_s:.1f}",
            "-" if r.input_tokens is None else str(r.input_tokens),
        )
    return table


def print_smoke(results: Sequence[SmokeResult]) -> None:
    """The tables (chat, embeddings), then one line per failure with its reason."""
    chats = [r for r in results if r.task != "embed"]
    embeds = [r for r in results if r.task == "embed"]
    if chats or not embeds:
        console().print(smoke_table(chats))
    if embeds:
        console().print(embed_table(embeds))
    for r in embeds:
        if r.truncated:
            console().print(f"[yellow]! {r.deployment}[/]: inputs {list(r.truncated)} were cut to the model's "
                            "maximum length", markup=True, soft_wrap=True)
    for r in results:
        if not r.passed:
            console().print(f"[red]✗ {r.deployment}[/]: {r.reason}", markup=True, soft_wrap=True)
    passed = sum(r.passed for r in results)
    console().print(f"{passed} of {len(results)} passed (tokens: s = counted by the server/engine, "
                    "t = tokenizer, c = chunks)")


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
                console().out(text, end="", highlight=False)
                return
            *lines, rest = (self._pending.get(name, "") + text).split("\n")
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
            suite, "testcase", {"classname": f"smoke.{r.engine or 'unknown'}", "name": r.deployment,
                                "time": f"{r.total_s or 0:.3f}"}
        )
        if not r.passed:
            message = _NOT_XML.sub("", r.reason or "failed")
            ET.SubElement(case, "failure", {"message": message, "type": "SmokeTestFailure"})
        properties = ET.SubElement(case, "properties")
        for field, name in _PROPERTIES:
            value = getattr(r, field)
            if value is not None:
                ET.SubElement(properties, "property", {"name": name, "value": f"{value:.6f}"})
        for key in ("output_tokens", "token_source", "finish_reason", "task", "dimension", "cos_positive",
                    "cos_negative", "texts_per_s", "input_tokens"):
            if getattr(r, key) is not None:
                ET.SubElement(properties, "property", {"name": key, "value": str(getattr(r, key))})
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
