"""Rendering of ``provision verify``: the problems, or what was checked, or why nothing was."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..files import plural
from . import console, err_console, literal
from .text import wrap_words


def verify_dict(problems: Sequence[Any], unlocked: Sequence[str], checked: int, lock_path: Path) -> dict[str, Any]:
    return {
        "ok": not problems and not unlocked,
        "files_checked": checked,
        "lock": str(lock_path),
        "not_locked": list(unlocked),
        "problems": [{"model": p.model, "path": p.path, "problem": p.problem} for p in problems],
    }


def render_verify(
    problems: Sequence[Any], unlocked: Sequence[str], checked: int, lock_path: Path, apply_command: str
) -> None:
    """Problems and unlocked models to stderr with the next step; else one line to stdout."""
    for problem in problems:
        err_console().print(
            f"[red]{problem.problem}[/]: {literal(problem.model)}/{literal(problem.path)}", soft_wrap=True
        )
    width = err_console().width
    if unlocked:
        what = "nothing is locked yet" if not checked else "not locked yet: " + ", ".join(unlocked)
        err_console().print(
            wrap_words(f"verify: {what} ({lock_path}); there is nothing to check them against", width),
            markup=False,
            soft_wrap=True,
        )
    if problems or unlocked:
        err_console().print(
            wrap_words(
                f"  hint: run `{apply_command}`: it fetches missing and corrupt files and "
                "writes the lock that verify checks against",
                width,
                indent="  ",
            ),
            markup=False,
            soft_wrap=True,
        )
    elif checked:
        console().print(f"verify: {plural(checked, 'file')} {'matches' if checked == 1 else 'match'} the lock.")
    else:
        console().print("verify: no downloaded model in this manifest; nothing to re-hash.")
