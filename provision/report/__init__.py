"""Rendering: tables, progress bars, JSON. The only place that prints.

Human output goes to stdout through rich; ``--json`` prints one JSON document; errors go to
stderr. Sub-modules render one command each (``smoke``, ``hardware``).
"""

from __future__ import annotations

import functools
import json
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

_CHANGE_STYLE = {
    Change.CREATE: "green",
    Change.UPDATE: "yellow",
    Change.REPLACE: "yellow",
    Change.NOOP: "dim",
    Change.DELETE: "red",
}


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


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


def render_plan(plan: Plan, failures: Iterable[Any] = ()) -> None:
    from rich.markup import escape
    from rich.table import Table

    from .text import shorten_middle, shorten_words

    failures = list(failures)
    # The reason wraps at spaces in what the other columns leave; longer words are shortened
    # (a path keeps its start and end), so nothing is folded mid-word. --json has them whole.
    address_width = min(30, max([len(a.address) for a in plan.actions] +
                                [len(o.action.address) for o in failures] + [8]))
    reason_width = max(16, console().width - address_width - len("no change") - len("1023.9 MiB") - 6)
    table = Table(show_edge=False, pad_edge=False, box=None)
    table.add_column("resource", no_wrap=True, max_width=address_width)
    table.add_column("change", no_wrap=True)
    table.add_column("reason", max_width=reason_width)
    table.add_column("download", justify="right", no_wrap=True)
    for action in plan.actions:
        style = _CHANGE_STYLE[action.change]
        table.add_row(
            escape(shorten_middle(action.address, address_width)),
            f"[{style}]{action.change.value}[/]",
            escape(shorten_words(action.reason, reason_width)),
            human_bytes(action.download_bytes) if action.download_bytes else "",
        )
    for outcome in failures:
        table.add_row(escape(shorten_middle(outcome.action.address, address_width)), "[red]error[/]",
                      escape(shorten_words(str(outcome.error.message), reason_width)), "")
    console().print(table)
    counts = plan.counts()
    summary = ", ".join(f"{n} to {c}" if c != Change.NOOP.value else f"{n} unchanged"
                        for c, n in counts.items() if n)
    total = f"; {human_bytes(plan.download_bytes)} to download" if plan.download_bytes else ""
    console().print(f"Plan: {summary or 'nothing declared'}{total}.")


def _escape(text: str) -> str:
    """Outside text (hub messages, paths) inside markup: shown as is, never interpreted."""
    from rich.markup import escape

    return escape(text)


def render_outcomes(outcomes: Iterable[Any], seconds: float, *, verb: str = "Apply") -> None:
    outcomes = list(outcomes)
    changed = [o for o in outcomes if o.ok and o.action.change is not Change.NOOP]
    failed = [o for o in outcomes if not o.ok]
    for outcome in changed:
        console().print(f"[green]✓[/] {_escape(outcome.action.address)}: {outcome.action.change.value} "
                        f"({_escape(outcome.action.reason)})")
    for outcome in failed:
        error = outcome.error
        err_console().print(f"[red]✗[/] {_escape(outcome.action.address)}: "
                            f"{_escape(error.message) if error else 'failed'}")
        if error is not None and error.hint:
            err_console().print(f"  hint: {error.hint}", markup=False)
    if not changed and not failed:
        console().print(f"{verb}: no changes; everything is up to date ({seconds:.2f} s).")
    else:
        console().print(f"{verb}: {len(changed)} changed, {len(failed)} failed, "
                        f"{len(outcomes) - len(changed) - len(failed)} unchanged in {seconds:.1f} s.")


def outcome_dict(outcome: Any) -> dict[str, Any]:
    out = action_dict(outcome.action)
    out["ok"] = outcome.ok
    out["seconds"] = round(outcome.seconds, 3)
    if outcome.error is not None:
        out["error"] = outcome.error.message
        out["hint"] = outcome.error.hint
    return out
