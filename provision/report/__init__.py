"""Rendering: tables, progress bars, JSON. The only place that prints.

Human output goes to stdout through rich; ``--json`` prints one JSON document; errors go to
stderr. Sub-modules render one command each (``smoke``, ``hardware``).

Text that came from outside (a hub, a server, the manifest, a path) goes through
:func:`literal` before it reaches rich: markup in it is shown as written, and control
characters are shown escaped, so a file name cannot restyle, rewrite or hide output.
"""

from __future__ import annotations

import functools
import json
import re
import signal
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ..files import human_bytes
from ..plan import Action, Change, Plan

if TYPE_CHECKING:
    from rich.console import Console


# Made on first use: importing rich costs ~20 ms of start-up that ``--json`` output never needs.
@functools.cache
def console() -> Console:
    """Human output, to stdout."""
    from rich.console import Console

    return Console(highlight=False)


@functools.cache
def err_console() -> Console:
    """Errors and failures, to stderr."""
    from rich.console import Console

    return Console(stderr=True, highlight=False)


# C0 and C1 controls, DEL, and the bidirectional overrides that make text display out of order.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_KEPT_IN_BLOCKS = {"\n", "\t"}
_SHORT_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escaped(char: str) -> str:
    code = ord(char)
    return _SHORT_ESCAPES.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def printable(text: object, *, multiline: bool = False) -> str:
    """``text`` with control characters escaped (``\\x1b``); for output that is not markup.

    ``multiline`` keeps newlines and tabs (a streamed answer); elsewhere they are escaped
    too, so an error stays one line and cannot forge another.
    """

    def control(match: re.Match[str]) -> str:
        char = match.group(0)
        return char if multiline and char in _KEPT_IN_BLOCKS else _escaped(char)

    return _CONTROL.sub(control, str(text))


def literal(text: object, *, multiline: bool = False) -> str:
    """``text`` as rich markup that prints exactly as written (see :func:`printable`): every
    string from a hub, a server, the manifest or a path goes through this before rich."""
    from rich.markup import escape

    return escape(printable(text, multiline=multiline))


_CHANGE_STYLE = {
    Change.CREATE: "green",
    Change.UPDATE: "yellow",
    Change.REPLACE: "yellow",
    Change.NOOP: "dim",
    Change.DELETE: "red",
}


# json.dumps escapes C0 controls; C1 ones (U+0080-U+009F: CSI is U+009B) and bidi overrides
# would reach a terminal raw with ensure_ascii=False.
_JSON_RAW = re.compile(r"[\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def print_json(data: Any) -> None:
    text = json.dumps(data, indent=2, ensure_ascii=False, default=str)
    sys.stdout.write(_JSON_RAW.sub(lambda m: f"\\u{ord(m.group(0)):04x}", text) + "\n")


def report_interrupt(signum: int, *, as_json: bool) -> None:
    """What an interrupted command prints (once): partial files stay, a rerun resumes."""
    name = signal.Signals(signum).name
    hint = "partial downloads are kept; run the command again to resume"
    if as_json:
        print_json({"ok": False, "interrupted": True, "signal": name, "exit_code": 128 + signum, "hint": hint})
        sys.stdout.flush()
    # Plain text, no rich: it may run in the watchdog thread, and importing rich costs ~50 ms.
    sys.stderr.write(f"interrupted ({name}): {hint}\n")
    sys.stderr.flush()


def action_dict(action: Action) -> dict[str, Any]:
    return {
        "address": action.address,
        "kind": action.kind,
        "name": action.name,
        "change": action.change.value,
        "reason": action.reason,
        "download_bytes": action.download_bytes,
        "files": len(action.files),
    }


def render_plan(plan: Plan, failures: Iterable[Any] = (), credentials: Iterable[str] = ()) -> None:
    from rich.table import Table

    from .text import shorten_middle, shorten_words

    failures = list(failures)
    # The reason wraps at spaces in what the other columns leave; longer words are shortened
    # (a path keeps its start and end), so nothing is folded mid-word. --json has them whole.
    address_width = min(
        30, max([len(a.address) for a in plan.actions] + [len(o.action.address) for o in failures] + [8])
    )
    reason_width = max(16, console().width - address_width - len("no change") - len("1023.9 MiB") - 6)
    table = Table(show_edge=False, pad_edge=False, box=None)
    table.add_column("resource", no_wrap=True, max_width=address_width)
    table.add_column("change", no_wrap=True)
    table.add_column("reason", max_width=reason_width)
    table.add_column("download", justify="right", no_wrap=True)
    for action in plan.actions:
        style = _CHANGE_STYLE[action.change]
        table.add_row(
            literal(shorten_middle(action.address, address_width)),
            f"[{style}]{action.change.value}[/]",
            literal(shorten_words(action.reason, reason_width)),
            human_bytes(action.download_bytes) if action.download_bytes else "",
        )
    for outcome in failures:
        error = outcome.error
        reason = literal(shorten_words(str(error.message), reason_width)) + (
            f"\n[dim]hint: {literal(shorten_words(error.hint, reason_width))}[/]" if error.hint else ""
        )
        table.add_row(literal(shorten_middle(outcome.action.address, address_width)), "[red]error[/]", reason, "")
    console().print(table)
    for line in credentials:
        console().print(f"[dim]credentials:[/] {literal(line)}", soft_wrap=True)
    console().print(f"Plan: {plan_summary(plan, len(failures))}.")


def plan_summary(plan: Plan, errors: int) -> str:
    """'3 unchanged, 1 to create, 7 errors; 1.5 GiB to download' ('nothing declared' only when so)."""
    parts = [f"{n} to {c}" if c != Change.NOOP.value else f"{n} unchanged" for c, n in plan.counts().items() if n]
    if errors:
        parts.append(f"{errors} error{'s' if errors != 1 else ''}")
    total = f"; {human_bytes(plan.download_bytes)} to download" if plan.download_bytes else ""
    return (", ".join(parts) or "nothing declared") + total


def _escape(text: str) -> str:
    """Outside text (hub messages, paths) inside markup: shown as is, never interpreted."""
    from rich.markup import escape

    return escape(text)


def render_outcomes(outcomes: Iterable[Any], seconds: float, *, verb: str = "Apply") -> None:
    outcomes = list(outcomes)
    changed = [o for o in outcomes if o.ok and o.action.change is not Change.NOOP]
    failed = [o for o in outcomes if not o.ok]
    for outcome in changed:
        console().print(
            f"[green]✓[/] {literal(outcome.action.address)}: {outcome.action.change.value} "
            f"({literal(outcome.action.reason)})",
            soft_wrap=True,
        )
    for outcome in failed:
        error = outcome.error
        err_console().print(
            f"[red]✗[/] {literal(outcome.action.address)}: {literal(error.message) if error else 'failed'}",
            soft_wrap=True,
        )
        if error is not None and error.hint:
            err_console().print(f"  hint: {literal(error.hint)}", soft_wrap=True)
    if not changed and not failed:
        console().print(f"{verb}: no changes; everything is up to date ({seconds:.2f} s).")
    else:
        console().print(
            f"{verb}: {len(changed)} changed, {len(failed)} failed, "
            f"{len(outcomes) - len(changed) - len(failed)} unchanged in {seconds:.1f} s."
        )


def outcome_dict(outcome: Any) -> dict[str, Any]:
    out = action_dict(outcome.action)
    out["ok"] = outcome.ok
    out["seconds"] = round(outcome.seconds, 3)
    if outcome.error is not None:
        out["error"] = outcome.error.message
        out["hint"] = outcome.error.hint
    return out
