"""What every ``provision`` command shares: the error wrapper, manifest loading, progress, run options.

Each import of a heavy module stays inside the function that needs it, so importing this (as
``cli.py`` does at start-up) costs no more than click.
"""

from __future__ import annotations

import functools
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from . import exitcodes
from .errors import ProvisionError

F = TypeVar("F", bound=Callable[..., Any])
DEBUG_ENV = "PROVISION_DEBUG"


def handle_errors(func: F) -> F:
    """One line and a hint per error; a traceback only with PROVISION_DEBUG=1.

    SIGINT and SIGTERM (:mod:`provision.signals`) unwind as ``Interrupted``: reported once
    (a JSON document with ``--json``), exit 130 or 143.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from . import signals
        from .report import err_console, literal, report_interrupt

        reporter = functools.partial(report_interrupt, as_json=bool(kwargs.get("as_json")))
        try:
            with signals.handling(reporter):
                return func(*args, **kwargs)
        except ProvisionError as exc:
            if os.environ.get(DEBUG_ENV):
                traceback.print_exc()  # and then the usual line and exit code: a script sees the same status
            err_console().print(f"[red]error:[/] {literal(exc)}", soft_wrap=True)
            if exc.hint:
                err_console().print(f"  hint: {literal(exc.hint)}", soft_wrap=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt as exc:
            signals.restore_terminal()
            signum = signals.signum_of(exc)
            signals.report_once(signum)
            sys.exit(128 + signum)
        except click.exceptions.Abort as exc:
            if not isinstance(exc.__context__, KeyboardInterrupt):
                raise  # EOF at a prompt: click's own "Aborted!" and exit 1
            # Ctrl-C at a prompt (destroy's "Remove these?") is an interrupt like any other
            signals.restore_terminal()
            signum = signals.signum_of(exc.__context__)
            signals.report_once(signum)
            sys.exit(128 + signum)
        except click.exceptions.Exit:
            raise
        except Exception as exc:
            if os.environ.get(DEBUG_ENV):
                raise
            err_console().print(f"[red]internal error:[/] {type(exc).__name__}: {literal(exc)}", soft_wrap=True)
            err_console().print(f"  hint: rerun with {DEBUG_ENV}=1 for the traceback, and report it")
            sys.exit(exitcodes.FAILED)

    return wrapper  # type: ignore[return-value]


def load(path: Path | None) -> Any:
    from .manifest_loader import load_manifest

    return load_manifest(path)  # None: $PROVISION_MANIFEST, else ./provision.yaml


def progress(as_json: bool) -> Any:
    from .progress import NullProgress

    if as_json or not sys.stdout.isatty():
        return NullProgress()
    from .report.progress import RichProgress

    return RichProgress()


def run_options(
    only: tuple[str, ...],
    update: bool = False,
    locked: bool = False,
    force: bool = False,
    verify: bool = False,
    yes: bool = False,
) -> Any:
    from .reconciler import RunOptions

    return RunOptions(only=only, update=update, locked=locked, force=force, verify=verify, yes=yes)


def smoke_target(target: str | None, names: tuple[str, ...]) -> tuple[Path, tuple[str, ...]]:
    """``smoke-test [MANIFEST] [NAME...]``: a first argument that is no file is a name."""
    if target is not None and (Path(target).is_file() or target.endswith((".yaml", ".yml"))):
        return Path(target), names
    if target is not None:
        names = (target, *names)
    from .manifest_loader import manifest_or_last_applied

    return manifest_or_last_applied(), names
