"""What `render kubernetes` made, skipped and needs from the user (the Secrets to create)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..render.kubernetes import Rendered
from . import console, err_console


def render_dict(rendered: Rendered, namespace: str | None, written: list[Path], removed: list[Path]) -> dict[str, Any]:
    return {
        "objects": [{"kind": o.kind, "name": o.name} for o in rendered.objects],
        "files": [str(p) for p in written],
        "removed": [str(p) for p in removed],
        "skipped": [{"address": a, "reason": r} for a, r in rendered.skipped],
        "secrets": [
            {
                "name": s.name,
                "keys": [k for k, _ in s.keys],
                "purpose": s.purpose,
                "required": s.required,
                "command": s.command(namespace),
            }
            for s in rendered.secrets
        ],
    }


def print_render(
    rendered: Rendered, namespace: str | None, written: list[Path], removed: list[Path], *, to_stderr: bool
) -> None:
    """The summary; on stderr when the YAML itself goes to stdout. Outside text is never markup."""
    out = err_console() if to_stderr else console()

    def say(text: str) -> None:
        out.print(text, markup=False, highlight=False, soft_wrap=True)

    kinds = len(rendered.objects)
    say(f"rendered {kinds} object{'s' if kinds != 1 else ''}" + (f" into {len(written)} files" if written else ""))
    for path in removed:
        say(f"  removed {path} (no longer rendered)")
    for address, reason in rendered.skipped:
        say(f"  skipped {address}: {reason}")
    if rendered.secrets:
        say("Secrets the objects read (create them before or after `kubectl apply`; values never appear here):")
        for secret in rendered.secrets:
            say(f"  {secret.purpose}{'' if secret.required else ', optional'}:")
            say(f"    {secret.command(namespace)}")
