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
    from rich.table import Table

    table = Table(show_edge=False, pad_edge=False, box=None)
    for column in ("resource", "change", "reason", "download"):
        table.add_column(column, justify="right" if column == "download" else "left")
    for action in plan.actions:
        style = _CHANGE_STYLE[action.change]
        table.add_row(
            action.address,
            f"[{style}]{action.change.value}[/]",
            action.reason,
            human_bytes(action.download_bytes) if action.download_bytes else "",
        )
    for outcome in failures:
        table.add_row(outcome.action.address, "[red]error[/]", str(outcome.error.message), "")
    console().print(table)
    counts = plan.counts()
    summary = ", ".join(f"{n} to {c}" if c != Change.NOOP.value else f"{n} unchanged"
                        for c, n in counts.items() if n)
    total = f"; {human_bytes(plan.download_bytes)} to download" if plan.download_bytes else ""
    console().print(f"Plan: {summary or 'nothing declared'}{total}.")


def render_outcomes(outcomes: Iterable[Any], seconds: float, *, verb: str = "Apply") -> None:
    outcomes = list(outcomes)
    changed = [o for o in outcomes if o.ok and o.action.change is not Change.NOOP]
    failed = [o for o in outcomes if not o.ok]
    for outcome in changed:
        console().print(f"[green]✓[/] {outcome.action.address}: {outcome.action.change.value} "
                        f"({outcome.action.reason})")
    for outcome in failed:
        error = outcome.error
        err_console().print(f"[red]✗[/] {outcome.action.address}: {error.message if error else 'failed'}")
        if error is not None and error.hint:
            err_console().print(f"  hint: {error.hint}")
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


def render_status(rows: list[dict[str, Any]], servers: Iterable[dict[str, Any]] = ()) -> None:
    from rich.table import Table

    table = Table(show_edge=False, pad_edge=False, box=None)
    table.add_column("resource", no_wrap=True)
    table.add_column("source / engine", overflow="fold")
    for column in ("applied", "state", "resolved"):
        table.add_column(column, no_wrap=True)
    table.add_column("detail")
    for row in rows:
        table.add_row(f"{row['kind']}.{row['name']}", row.get("source") or row.get("engine", ""),
                      "yes" if row.get("applied") else "no", row.get("state", ""),
                      str(row.get("resolved") or "")[:12], row.get("detail", ""))
    console().print(table)
    for server in servers:
        if server["reachable"]:
            console().print(f"{server['server']}: {server['address']} reachable, version {server['version']}")
        else:
            err_console().print(f"{server['server']}: {server['address']} not reachable ({server['error']})")
