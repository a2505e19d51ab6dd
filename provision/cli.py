"""The ``provision`` command: parse arguments, call the engine, render, map errors to exit codes.

Exit codes (the same for every command):

====  ==========================================================================
0     success; nothing failed (``plan --detailed-exitcode``: no changes)
1     something failed: a resource, a verification, a smoke test, a preflight check
2     bad input: an invalid manifest or command line (``plan --detailed-exitcode``: changes)
130   interrupted (Ctrl-C); a rerun resumes
====  ==========================================================================

Heavy libraries (torch, transformers, docker, ollama, modelscope, openai) are imported
only inside the commands that need them, so ``provision --help`` stays fast.
"""

from __future__ import annotations

import functools
import gc
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from . import __version__
from .errors import ProvisionError

F = TypeVar("F", bound=Callable[..., Any])
DEBUG_ENV = "PROVISION_DEBUG"


def _handle_errors(func: F) -> F:
    """One line and a hint per error; a traceback only with PROVISION_DEBUG=1."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from .report import err_console

        try:
            return func(*args, **kwargs)
        except ProvisionError as exc:
            if os.environ.get(DEBUG_ENV):
                raise
            err_console().print(f"[red]error:[/] {exc}", markup=True, highlight=False, soft_wrap=True)
            if exc.hint:
                err_console().print(f"  hint: {exc.hint}", markup=False, soft_wrap=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            err_console().print("interrupted; run the command again to resume")
            sys.exit(130)
        except (click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as exc:
            if os.environ.get(DEBUG_ENV):
                raise
            err_console().print(f"[red]internal error:[/] {type(exc).__name__}: {exc}", soft_wrap=True)
            err_console().print(f"  hint: rerun with {DEBUG_ENV}=1 for the traceback, and report it")
            sys.exit(1)

    return wrapper  # type: ignore[return-value]


manifest_argument = click.argument("manifest", required=False, type=click.Path(dir_okay=False, path_type=Path))
json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead of tables.")


def _load(path: Path | None, *, secrets_optional: bool = False) -> Any:
    from .manifest import DEFAULT_MANIFEST, load_manifest

    if path is None:
        path = Path(os.environ.get("PROVISION_MANIFEST", DEFAULT_MANIFEST))
    return load_manifest(path, secrets_optional=secrets_optional)


def _progress(as_json: bool) -> Any:
    from .progress import NullProgress

    if as_json or not sys.stdout.isatty():
        return NullProgress()
    from .report.progress import RichProgress

    return RichProgress()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="provision")
def main() -> None:
    """Provision and deploy LLMs from a YAML manifest, and prove each deployment works.

    MANIFEST defaults to $PROVISION_MANIFEST, else ./provision.yaml.
    """
    # provision draws its own progress; libraries' tqdm bars (e.g. transformers' GGUF loader,
    # which ignores its own switch) would interleave with it. tqdm reads this at import.
    os.environ.setdefault("TQDM_DISABLE", "1")


@main.command()
@manifest_argument
@json_option
@_handle_errors
def validate(manifest: Path | None, as_json: bool) -> None:
    """Check a manifest without touching anything."""
    from .report import console, print_json

    loaded = _load(manifest)
    if as_json:
        print_json({"valid": True, "manifest": str(loaded.path), "models": sorted(loaded.models),
                    "deployments": sorted(loaded.deployments)})
    else:
        console().print(f"{loaded.path}: valid ({len(loaded.models)} models, {len(loaded.deployments)} deployments)")


def _run_options(only: tuple[str, ...], update: bool = False, locked: bool = False, force: bool = False) -> Any:
    from .engine import RunOptions

    return RunOptions(only=only, update=update, locked=locked, force=force)


@main.command()
@manifest_argument
@click.option("--only", multiple=True, metavar="NAME", help="Plan only these models or deployments.")
@click.option("--update", is_flag=True, help="Re-resolve branches and tags instead of following the lock.")
@click.option("--locked", is_flag=True, help="Fail if the lock file would change.")
@click.option("--detailed-exitcode", is_flag=True, help="Exit 0 with no changes, 2 with changes, 1 on error.")
@json_option
def plan(manifest: Path | None, only: tuple[str, ...], update: bool, locked: bool,
         detailed_exitcode: bool, as_json: bool) -> None:
    """Show what `apply` would change, and why, without changing anything."""
    try:
        code = _plan(manifest, only, update, locked, detailed_exitcode, as_json)
    except SystemExit as exc:
        # Terraform's convention: with --detailed-exitcode every error is 1, since 2 means changes.
        if detailed_exitcode and exc.code not in (0, None, 130):
            sys.exit(1)
        raise
    sys.exit(code)


@_handle_errors
def _plan(manifest: Path | None, only: tuple[str, ...], update: bool, locked: bool,
          detailed_exitcode: bool, as_json: bool) -> int:
    from .engine import Engine
    from .report import action_dict, print_json, render_plan

    with Engine(_load(manifest)) as engine:
        result = engine.plan(_run_options(only, update, locked))
    if as_json:
        print_json({"actions": [action_dict(a) for a in result.plan.actions],
                    "errors": [{"address": o.action.address, "error": o.error.message, "hint": o.error.hint}
                               for o in result.failures if o.error is not None],
                    "download_bytes": result.plan.download_bytes, "changes": result.plan.has_changes})
    else:
        render_plan(result.plan, result.failures)
    if result.failures:
        return 1
    return 2 if detailed_exitcode and result.plan.has_changes else 0


@main.command()
@manifest_argument
@click.option("--only", multiple=True, metavar="NAME", help="Apply only these models or deployments.")
@click.option("--update", is_flag=True, help="Re-resolve branches and tags and rewrite the lock file.")
@click.option("--locked", is_flag=True, help="Refuse any change to the lock file (CI, production).")
@click.option("--force", is_flag=True, help="Apply even if a deployment looks too big for this machine.")
@json_option
@_handle_errors
def apply(manifest: Path | None, only: tuple[str, ...], update: bool, locked: bool, force: bool,
          as_json: bool) -> None:
    """Make this machine match the manifest: download, pull, start; idempotent and resumable."""
    from .engine import Engine
    from .report import outcome_dict, print_json, render_outcomes

    loaded = _load(manifest)
    progress = _progress(as_json)
    with Engine(loaded, progress=progress) as engine:
        planned = engine.plan(_run_options(only, update, locked, force))
        # Fit checks need the machine's inventory (NVML, Docker, Ollama probes): only when a
        # deployment is part of the change. The disk check always runs, in the engine.
        if not force and planned.plan.has_changes and any(a.kind == "deployment" for a in planned.plan.actions):
            from .preflight import enforce, run_preflight

            enforce(run_preflight(engine, planned))
        with progress:
            result = engine.apply(planned=planned)
    if as_json:
        print_json({"ok": result.ok, "seconds": round(result.seconds, 3),
                    "outcomes": [outcome_dict(o) for o in result.outcomes]})
    else:
        render_outcomes(result.outcomes, result.seconds)
    sys.exit(0 if result.ok else 1)


@main.command()
@manifest_argument
@json_option
@_handle_errors
def status(manifest: Path | None, as_json: bool) -> None:
    """What is applied on this machine (offline; state lives in $PROVISION_STATE_DIR)."""
    from .engine import Engine
    from .report import console, print_json, render_status
    from .state import State

    if manifest is None and not Path(os.environ.get("PROVISION_MANIFEST", "provision.yaml")).exists():
        state = State()
        manifests = state.manifests()
        if as_json:
            print_json({"state_file": str(state.path), "manifests": manifests})
        else:
            console().print(f"state: {state.path}")
            for path in manifests or ["(nothing applied yet)"]:
                console().print(f"  {path}")
        return
    with Engine(_load(manifest)) as engine:
        rows = engine.status()
        servers = engine.servers()
    if as_json:
        print_json({"resources": rows, "servers": servers})
    else:
        render_status(rows, servers)


@main.command()
@manifest_argument
@json_option
@_handle_errors
def verify(manifest: Path | None, as_json: bool) -> None:
    """Re-hash downloaded files against the lock file, offline; exit 1 on any problem."""
    from .engine import Engine
    from .report import console, err_console, print_json

    with Engine(_load(manifest)) as engine:
        problems = engine.verify()
        checked = sum(len(e.get("files", {})) for e in engine.lock.models.values())
    if as_json:
        print_json({"ok": not problems, "files_checked": checked,
                    "problems": [{"model": p.model, "path": p.path, "problem": p.problem} for p in problems]})
    else:
        for problem in problems:
            err_console().print(f"[red]{problem.problem}[/]: {problem.model}/{problem.path}")
        if problems:
            err_console().print("  hint: run `provision apply` to fetch missing and corrupt files again")
        else:
            console().print(f"verify: {checked} files match the lock.")
    sys.exit(1 if problems else 0)


@main.command()
@manifest_argument
@click.option("--only", multiple=True, metavar="NAME", help="Destroy only these models or deployments.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@json_option
@_handle_errors
def destroy(manifest: Path | None, only: tuple[str, ...], yes: bool, as_json: bool) -> None:
    """Remove what provision created for this manifest (only that)."""
    from .engine import Engine
    from .report import console, outcome_dict, print_json, render_outcomes, render_plan

    with Engine(_load(manifest, secrets_optional=True)) as engine:  # removing needs no key
        destroy_plan = engine.destroy_plan(only)
        if not destroy_plan.actions:
            if as_json:
                print_json({"ok": True, "outcomes": []})
            else:
                console().print("destroy: nothing recorded for this manifest; nothing to remove.")
            return
        if not as_json:
            render_plan(destroy_plan)
        if not yes:
            if not sys.stdin.isatty():
                raise ProvisionError("refusing to destroy without confirmation", hint="pass --yes")
            click.confirm("Remove these?", abort=True)
        result = engine.destroy(destroy_plan)
    if as_json:
        print_json({"ok": result.ok, "outcomes": [outcome_dict(o) for o in result.outcomes]})
    else:
        render_outcomes(result.outcomes, result.seconds, verb="Destroy")
    sys.exit(0 if result.ok else 1)


@main.command("check-hardware")
@manifest_argument
@json_option
@_handle_errors
def check_hardware(manifest: Path | None, as_json: bool) -> None:
    """GPUs, VRAM, driver, RAM, disk, Docker GPU runtime, Ollama; with MANIFEST, whether each deployment fits.

    Exit 1 when a deployment cannot fit (FAIL); nothing is downloaded but config.json files.
    """
    from .hardware import Level, collect_inventory
    from .report import print_json
    from .report.hardware import hardware_dict, render_hardware

    if manifest is None:
        inventory = collect_inventory(models_dir=Path.cwd())
        fits: tuple = ()
        findings: tuple = ()
    else:
        from .engine import Engine
        from .preflight import run_preflight

        loaded = _load(manifest)
        with Engine(loaded) as engine:
            report = run_preflight(engine, engine.plan(_run_options(())))
        inventory, fits, findings = report.inventory, report.fits, report.findings
    if as_json:
        print_json(hardware_dict(inventory, fits, findings))
    else:
        render_hardware(inventory, fits, findings)
    levels = [f.level for fit in fits for f in fit.findings] + [f.level for f in findings]
    sys.exit(1 if Level.FAIL in levels else 0)


@main.command("smoke-test")
@click.argument("target", required=False)
@click.argument("names", nargs=-1)
@click.option("--show", is_flag=True, help="Print the answers as they stream (default with one deployment).")
@click.option("--junit", type=click.Path(dir_okay=False, path_type=Path), help="Also write a JUnit XML report.")
@click.option("--concurrency", type=click.IntRange(1, 64), default=4, show_default=True,
              help="Deployments tested at once.")
@json_option
@_handle_errors
def smoke_test(target: str | None, names: tuple[str, ...], show: bool, junit: Path | None,
               concurrency: int, as_json: bool) -> None:
    """Stream a chat against each deployment: TTFT, ITL, tokens/s, pass/fail.

    TARGET is a manifest, or a deployment name; with no manifest, the one applied last here.
    """
    from .engine import Engine
    from .report import print_json
    from .report.smoke import StreamPrinter, print_smoke, smoke_dict, write_junit
    from .smoke import run_many

    manifest_path, names = _smoke_target(target, names)
    with Engine(_load(manifest_path)) as engine:
        jobs = engine.smoke_jobs(names)
    if not jobs:
        raise ProvisionError("the manifest declares no deployment to test", hint="add one under `deployments:`")
    printer = StreamPrinter(prefix=len(jobs) > 1) if (show or len(jobs) == 1) and not as_json else None
    results = run_many(jobs, concurrency=concurrency, on_text=printer)
    if printer is not None:
        printer.finish()
    if junit is not None:
        write_junit(results, junit)
    if as_json:
        print_json(smoke_dict(results))
    else:
        print_smoke(results)
    sys.exit(0 if all(r.passed for r in results) else 1)


def _smoke_target(target: str | None, names: tuple[str, ...]) -> tuple[Path | None, tuple[str, ...]]:
    """``smoke-test [MANIFEST] [NAME...]``: a first argument that is no file is a name."""
    if target is not None and (Path(target).is_file() or target.endswith((".yaml", ".yml"))):
        return Path(target), names
    if target is not None:
        names = (target, *names)
    if os.environ.get("PROVISION_MANIFEST") or Path("provision.yaml").exists():
        return None, names
    from .state import State

    last = State().last_applied
    if last is None:
        raise ProvisionError("no manifest given and nothing applied on this machine yet",
                             hint="run `provision apply MANIFEST` first, or pass the manifest")
    return Path(last), names


def run() -> None:
    try:
        main(prog_name="provision")
    finally:
        # At exit the interpreter garbage-collects every object the imports made (pydantic's
        # schemas, rich's tables): ~30 ms of a 0.2 s command here. Frozen objects are skipped;
        # atexit handlers and flushing still run as usual.
        gc.freeze()


if __name__ == "__main__":  # pragma: no cover
    run()
