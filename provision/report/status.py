"""Rendering of ``provision status``: a models table, a deployments table, then the details.

Each table fits the console's width (80 columns on a pipe) without folding a word: names
and sources are shortened in the middle (:mod:`provision.report.text`), and the free-text
detail goes below its table, one ``name: detail`` line each, where it wraps at spaces.
``--json`` carries every value in full.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from rich.padding import Padding
from rich.table import Table

from ..reconciler.inspection import DeploymentStatus, ModelStatus, ServerStatus, StatusRow
from . import console, err_console, literal
from .text import shorten_middle, shorten_words

_NAME_WIDTH = 24
_REVISION_WIDTH = 10
_STATE_STYLE = {
    "ok": "green",
    "present": "green",
    "hosted": "cyan",
    "missing": "red",
    "drift": "yellow",
    "unknown": "yellow",
    "unreachable": "red",
}


def _state(text: str) -> str:
    style = _STATE_STYLE.get(text.split(" ", 1)[0])
    return f"[{style}]{literal(text)}[/]" if style else literal(text)


def _table(title: str, columns: Sequence[str], rows: Sequence[Sequence[str]], flexible: int, width: int) -> Table:
    """A box-less table whose column ``flexible`` takes what the others leave, shortened to fit."""
    widths = [max([len(header)] + [len(row[i]) for row in rows]) for i, header in enumerate(columns)]
    widths[0] = min(widths[0], _NAME_WIDTH)
    others = sum(w for i, w in enumerate(widths) if i != flexible) + 2 * (len(columns) - 1)
    widths[flexible] = max(12, min(widths[flexible], width - others))
    table = Table(box=None, pad_edge=False, show_edge=False, title=title, title_justify="left", title_style="bold")
    for i, header in enumerate(columns):
        table.add_column(header, no_wrap=True, max_width=widths[i] if i in (0, flexible) else None)
    for row in rows:
        cells = [shorten_middle(cell, widths[i]) if i in (0, flexible) else cell for i, cell in enumerate(row)]
        state = columns.index("state")
        table.add_row(*(_state(c) if i == state else literal(c) for i, c in enumerate(cells)))
    return table


def render_status(rows: Sequence[StatusRow], servers: Iterable[ServerStatus] = ()) -> None:
    width = console().width
    models = [r for r in rows if isinstance(r, ModelStatus)]
    deployments = [r for r in rows if isinstance(r, DeploymentStatus)]
    if models:
        console().print(
            _table(
                "models",
                ("model", "source", "applied", "state", "revision"),
                [
                    (
                        r.name,
                        r.source or "",
                        "yes" if r.applied else "no",
                        r.state or "",
                        str(r.resolved or "")[:_REVISION_WIDTH],
                    )
                    for r in models
                ],
                1,
                width,
            )
        )
        _details(models, width)
    if deployments:
        console().print(
            _table(
                "deployments",
                ("deployment", "engine", "model", "applied", "state"),
                [
                    (
                        r.name,
                        r.engine,
                        r.model or "-",
                        "yes" if r.applied else "no",
                        r.state,
                    )
                    for r in deployments
                ],
                2,
                width,
            )
        )
        _details(deployments, width)
    for server in servers:
        if server.reachable:
            console().print(f"{server.server}: {server.address} reachable, version {server.version}", markup=False)
        else:
            err_console().print(f"{server.server}: {server.address} not reachable ({server.error})", markup=False)


def _details(rows: Sequence[ModelStatus | DeploymentStatus], width: int) -> None:
    """Each row's detail beside its name, wrapped at spaces (long words shortened to fit)."""
    noted = [r for r in rows if r.detail]
    if not noted:
        return
    name_width = min(max(len(r.name) for r in noted) + 1, _NAME_WIDTH + 1)
    room = max(12, width - name_width - 4)
    grid = Table.grid(padding=(0, 1), pad_edge=False)
    grid.add_column(no_wrap=True, max_width=name_width)
    grid.add_column(max_width=room)
    for row in noted:
        grid.add_row(
            literal(shorten_middle(row.name, name_width - 1) + ":"), literal(shorten_words(str(row.detail), room))
        )
    console().print(Padding(grid, (0, 0, 0, 2)))
