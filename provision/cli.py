"""The ``provision`` command: parse arguments, call the reconciler, render, map errors to exit codes.

Exit codes are the same for every command: one table, in :mod:`provision.exitcodes`. The
help's layout (summaries, examples, option groups) is :mod:`provision.cli_help`.

Heavy libraries (torch, transformers, docker, ollama, modelscope, openai) are imported
only inside the commands that need them, so ``provision --help`` stays fast.
"""

from __future__ import annotations

import functools
import gc
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from . import __version__, exitcodes
from .cli_help import ProvisionGroup, ProvisionSubgroup
from .errors import ProvisionError, UsageError

if TYPE_CHECKING:
    from .fit import DeploymentFit
    from .hardware import Finding

F = TypeVar("F", bound=Callable[..., Any])
DEBUG_ENV = "PROVISION_DEBUG"


def _handle_errors(func: F) -> F:
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


manifest_argument = click.argument("manifest", required=False, type=click.Path(dir_okay=False, path_type=Path))
json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead of tables.")


def _load(path: Path | None) -> Any:
    from .manifest_loader import load_manifest

    return load_manifest(path)  # None: $PROVISION_MANIFEST, else ./provision.yaml


def _progress(as_json: bool) -> Any:
    from .progress import NullProgress

    if as_json or not sys.stdout.isatty():
        return NullProgress()
    from .report.progress import RichProgress

    return RichProgress()


@click.group(cls=ProvisionGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="provision")
def main() -> None:
    """Provision and deploy LLMs from a YAML manifest, and prove each deployment works."""
    # provision draws its own progress; libraries' tqdm bars (e.g. transformers' GGUF loader,
    # which ignores its own switch) would interleave with it. tqdm reads this at import.
    os.environ.setdefault("TQDM_DISABLE", "1")


@main.command()
@click.argument("model_refs", nargs=-1, metavar="[MODEL_REF]...")
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="FILE",
    help="The manifest to write [default: $PROVISION_MANIFEST, else ./provision.yaml].",
)
@json_option
@_handle_errors
def init(model_refs: tuple[str, ...], output: Path | None, as_json: bool) -> None:
    """Write a commented starter manifest: a model per MODEL_REF, a deployment each, the smoke test.

    MODEL_REF is a source as the manifest writes it: hf://owner/name, ms://owner/name,
    ollama://name:tag or file://path. It never overwrites a file (exit 2).
    """
    from .files import plural
    from .init import EXAMPLE_REF, parse_refs, starter_manifest, write_new
    from .manifest_loader import default_manifest_path
    from .report import console, print_json

    path = output or default_manifest_path()
    models = parse_refs(model_refs or (EXAMPLE_REF,))
    write_new(path, starter_manifest(models, file=str(path)))
    if as_json:
        print_json(
            {"manifest": str(path), "models": [m.name for m in models], "deployments": [m.deployment for m in models]}
        )
    else:
        console().print(
            f"wrote {path}: {plural(len(models), 'model')}, {plural(len(models), 'deployment')}", markup=False
        )
        console().print(f"next: provision validate {path} && provision plan {path}", markup=False)


@main.command()
@manifest_argument
@json_option
@_handle_errors
def validate(manifest: Path | None, as_json: bool) -> None:
    """Check a manifest without touching anything."""
    from .files import plural
    from .report import console, literal, print_json

    loaded = _load(manifest)
    if as_json:
        print_json(
            {
                "valid": True,
                "manifest": str(loaded.path),
                "models": sorted(loaded.models),
                "deployments": sorted(loaded.deployments),
            }
        )
    else:
        console().print(
            f"{literal(loaded.path)}: valid ({plural(len(loaded.models), 'model')}, "
            f"{plural(len(loaded.deployments), 'deployment')})",
            soft_wrap=True,
        )


def _run_options(
    only: tuple[str, ...],
    update: bool = False,
    locked: bool = False,
    force: bool = False,
    verify: bool = False,
    yes: bool = False,
) -> Any:
    from .reconciler import RunOptions

    return RunOptions(only=only, update=update, locked=locked, force=force, verify=verify, yes=yes)


@main.command()
@manifest_argument
@click.option("--only", multiple=True, metavar="NAME", help="Plan only these models or deployments.")
@click.option("--update", is_flag=True, help="Re-resolve branches and tags instead of following the lock.")
@click.option("--locked", is_flag=True, help="Fail if the lock file would change.")
@click.option("--detailed-exitcode", is_flag=True, help="Exit 0 with no changes, 2 with changes, 1 on error.")
@json_option
def plan(
    manifest: Path | None, only: tuple[str, ...], update: bool, locked: bool, detailed_exitcode: bool, as_json: bool
) -> None:
    """Show what `apply` would change, and why, without changing anything."""
    try:
        code = _plan(manifest, only, update, locked, detailed_exitcode, as_json)
    except SystemExit as exc:
        # Terraform's convention: with --detailed-exitcode every error is 1, since 2 means changes.
        if detailed_exitcode and exc.code not in (0, None, 130, 143):
            sys.exit(1)
        raise
    sys.exit(code)


@_handle_errors
def _plan(
    manifest: Path | None, only: tuple[str, ...], update: bool, locked: bool, detailed_exitcode: bool, as_json: bool
) -> int:
    from .credentials import token_routes
    from .reconciler import Reconciler
    from .report import action_dict, print_json, render_plan

    with Reconciler(_load(manifest)) as reconciler:
        result = reconciler.plan(_run_options(only, update, locked))
        routes = token_routes(reconciler.manifest)
    if as_json:
        print_json(
            {
                "actions": [action_dict(a) for a in result.plan.actions],
                "errors": [
                    {"address": o.action.address, "error": o.error.message, "hint": o.error.hint}
                    for o in result.failures
                    if o.error is not None
                ],
                "credentials": [vars(route) for route in routes],
                "download_bytes": result.plan.download_bytes,
                "changes": result.plan.has_changes,
            }
        )
    else:
        render_plan(result.plan, result.failures, credentials=map(str, routes))
    if result.failures:
        return 1
    return 2 if detailed_exitcode and result.plan.has_changes else 0


@main.command()
@manifest_argument
@click.option("--only", multiple=True, metavar="NAME", help="Apply only these models or deployments.")
@click.option("--update", is_flag=True, help="Re-resolve branches and tags and rewrite the lock file.")
@click.option("--locked", is_flag=True, help="Refuse any change to the lock file (CI, production).")
@click.option("--force", is_flag=True, help="Apply even if a deployment looks too big for this machine.")
@click.option("--verify", "verify_all", is_flag=True, help="Re-hash every placed file and fetch again what differs.")
@click.option("--yes", "-y", is_flag=True, help="Remove models no longer in the manifest without asking.")
@json_option
@_handle_errors
def apply(
    manifest: Path | None,
    only: tuple[str, ...],
    update: bool,
    locked: bool,
    force: bool,
    verify_all: bool,
    yes: bool,
    as_json: bool,
) -> None:
    """Make this machine match the manifest: download, pull, start; idempotent and resumable."""
    from dataclasses import replace

    from .reconciler import Reconciler
    from .report import outcome_dict, print_json, render_outcomes

    loaded = _load(manifest)
    progress = _progress(as_json)
    with Reconciler(loaded, progress=progress) as reconciler:
        options = _run_options(only, update, locked, force, verify_all, yes)
        planned = reconciler.plan(options)
        orphans = planned.orphan_models()
        if orphans and not yes and not as_json and sys.stdin.isatty():
            options = replace(
                options, yes=click.confirm(f"Remove models no longer in the manifest ({', '.join(orphans)})?")
            )
        # Fit checks need the machine's inventory (NVML, Docker, Ollama probes): only when a
        # deployment is part of the change. The disk check always runs, in the reconciler.
        if not force and planned.plan.has_changes and any(a.kind == "deployment" for a in planned.plan.actions):
            from .preflight import enforce, run_preflight

            enforce(run_preflight(reconciler, planned))
        with progress:
            result = reconciler.apply(options, planned=planned)
    if as_json:
        print_json(
            {
                "ok": result.ok,
                "seconds": round(result.seconds, 3),
                "outcomes": [outcome_dict(o) for o in result.outcomes],
            }
        )
    else:
        render_outcomes(result.outcomes, result.seconds)
    sys.exit(0 if result.ok else 1)


@main.command()
@manifest_argument
@json_option
@_handle_errors
def status(manifest: Path | None, as_json: bool) -> None:
    """What is applied on this machine (offline; state lives in $PROVISION_STATE_DIR)."""
    from .manifest_loader import default_manifest_path
    from .reconciler import Reconciler
    from .report import console, literal, print_json
    from .report.status import render_status
    from .state import State

    if manifest is None and not default_manifest_path().exists():
        state = State()
        manifests = state.manifests()
        if as_json:
            print_json({"state_file": str(state.path), "manifests": manifests})
        else:
            console().print(f"state: {literal(state.path)}")
            for path in manifests or ["(nothing applied yet)"]:
                console().print(f"  {literal(path)}")
        return
    with Reconciler(_load(manifest)) as reconciler:
        rows = reconciler.status()
        servers = reconciler.servers()
    if as_json:
        print_json({"resources": [row.as_dict() for row in rows], "servers": [vars(server) for server in servers]})
    else:
        render_status(rows, servers)


@main.command()
@manifest_argument
@json_option
@_handle_errors
def verify(manifest: Path | None, as_json: bool) -> None:
    """Re-hash downloaded files against the lock file, offline; exit 1 on any problem."""
    from .reconciler import Reconciler
    from .report import print_json
    from .report.verify import render_verify, verify_dict

    with Reconciler(_load(manifest)) as reconciler:
        problems = reconciler.verify()
        unlocked = reconciler.unlocked_models()
        checked = sum(len(e.get("files", {})) for e in reconciler.lock.models.values())
        lock_path = reconciler.manifest.lock_path
    if as_json:
        print_json(verify_dict(problems, unlocked, checked, lock_path))
    else:
        render_verify(problems, unlocked, checked, lock_path, f"provision apply {manifest or ''}".strip())
    sys.exit(exitcodes.FAILED if problems or unlocked else exitcodes.OK)


@main.command()
@manifest_argument
@click.option("--only", multiple=True, metavar="NAME", help="Destroy only these models or deployments.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@json_option
@_handle_errors
def destroy(manifest: Path | None, only: tuple[str, ...], yes: bool, as_json: bool) -> None:
    """Remove what provision created for this manifest (only that)."""
    from .reconciler import Reconciler
    from .report import console, outcome_dict, print_json, render_outcomes, render_plan

    with Reconciler(_load(manifest)) as reconciler:  # secrets resolve on use: removing needs none
        destroy_plan = reconciler.destroy_plan(only)
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
                raise UsageError(
                    "refusing to destroy without confirmation: stdin is not a terminal",
                    hint="pass --yes to remove without asking",
                )
            click.confirm("Remove these?", abort=True)
        result = reconciler.destroy(destroy_plan)
    if as_json:
        print_json({"ok": result.ok, "outcomes": [outcome_dict(o) for o in result.outcomes]})
    else:
        render_outcomes(result.outcomes, result.seconds, verb="Destroy")
    sys.exit(0 if result.ok else 1)


@main.command("check-hardware")
@manifest_argument
@click.option("--gpu", "gpu", metavar="NAME[xN]", help="Judge against GPUs you don't have, e.g. L4, A10Gx2, H100.")
@click.option("--vram", metavar="SIZE[xN]", help="Judge against N GPUs of this memory, e.g. 40GiB, 23034MiBx2.")
@click.option("--list-gpus", is_flag=True, help="Print the GPUs --gpu knows, and exit.")
@json_option
@_handle_errors
def check_hardware(manifest: Path | None, gpu: str | None, vram: str | None, list_gpus: bool, as_json: bool) -> None:
    """GPUs, VRAM, driver, RAM, disk, Docker GPU runtime, Ollama; with MANIFEST, whether each deployment fits.

    With --gpu or --vram, each deployment is judged against those GPUs instead, and this
    machine's drivers, Docker, images and ports are not probed. Exit 1 when a deployment cannot
    fit (FAIL), 2 for an unknown GPU; nothing is downloaded but config.json files.
    """
    from .hardware import Level, collect_inventory
    from .report import print_json
    from .report.hardware import gpu_table_dict, hardware_dict, render_gpu_table, render_hardware

    if list_gpus:
        from .gpus import GPUS

        if as_json:
            print_json(gpu_table_dict(GPUS))
        else:
            render_gpu_table(GPUS)
        return
    from .gpus import parse_target, planned_inventory

    target = parse_target(gpu=gpu, vram=vram)
    if manifest is None:
        inventory = collect_inventory(models_dir=Path.cwd()) if target is None else planned_inventory(target)
        fits: tuple[DeploymentFit, ...] = ()
        findings: tuple[Finding, ...] = ()
    else:
        from .preflight import preflight_for, run_preflight
        from .reconciler import Reconciler

        loaded = _load(manifest)
        with Reconciler(loaded) as reconciler:
            report = (
                preflight_for(reconciler, target)
                if target
                else run_preflight(reconciler, reconciler.plan(_run_options(())))
            )
        inventory, fits, findings = report.inventory, report.fits, report.findings
    if as_json:
        print_json(hardware_dict(inventory, fits, findings, target))
    else:
        render_hardware(inventory, fits, findings)
    levels = [f.level for fit in fits for f in fit.findings] + [f.level for f in findings]
    sys.exit(1 if Level.FAIL in levels else 0)


@main.command("smoke-test")
@click.argument("target", required=False)
@click.argument("names", nargs=-1)
@click.option("--show", is_flag=True, help="Print the answers as they stream (default with one deployment).")
@click.option("--junit", type=click.Path(dir_okay=False, path_type=Path), help="Also write a JUnit XML report.")
@click.option(
    "--concurrency", type=click.IntRange(1, 64), default=4, show_default=True, help="Deployments tested at once."
)
@json_option
@_handle_errors
def smoke_test(
    target: str | None, names: tuple[str, ...], show: bool, junit: Path | None, concurrency: int, as_json: bool
) -> None:
    """Stream a chat against each deployment: TTFT, ITL, tokens/s, pass/fail.

    TARGET is a manifest, or a deployment name; with no manifest, the one applied last here.
    """
    from .reconciler import Reconciler
    from .report import print_json
    from .report.smoke import StreamPrinter, print_smoke, smoke_dict, write_junit
    from .smoke import run_many

    manifest_path, names = _smoke_target(target, names)
    with Reconciler(_load(manifest_path)) as reconciler:
        jobs = reconciler.smoke_jobs(names)
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


@main.command()
@click.argument("target", metavar="[MANIFEST] DEPLOYMENT")
@click.argument("deployment", required=False, metavar="")
@click.option("--system", help="A system message for the conversation.")
@click.option("--temperature", type=float, help="Override smoke_test.temperature.")
@click.option("--top-p", type=float, help="Override smoke_test.top_p.")
@click.option("--top-k", type=int, help="Override smoke_test.top_k.")
@click.option("--repetition-penalty", type=float, help="Override smoke_test.repetition_penalty.")
@click.option("--max-tokens", type=int, help="Override smoke_test.max_tokens (per answer).")
@click.option("--no-stream", is_flag=True, help="Print each answer whole, once it is complete.")
@click.option("--stats", is_flag=True, help="A line per answer: TTFT, tokens/s, tokens (on stderr).")
@click.option("--hide-thinking", is_flag=True, help="Drop <think>...</think> reasoning from the output.")
@_handle_errors
def chat(
    target: str,
    deployment: str | None,
    system: str | None,
    no_stream: bool,
    stats: bool,
    hide_thinking: bool,
    **sampling: Any,
) -> None:
    """Talk to a deployment: streamed, multi-turn; through a pipe, one turn per line.

    At a terminal: /reset, /system TEXT, /exit; Ctrl-C stops the current answer.
    """
    from .chat import ChatOptions, run_chat

    manifest, names = _smoke_target(target, (deployment,) if deployment else ())
    options = ChatOptions(
        stream=not no_stream,
        stats=stats,
        hide_thinking=hide_thinking,
        sampling={k: v for k, v in sampling.items() if v is not None},
    )
    from . import signals

    with signals.interactive():  # Ctrl-C stops one answer, not the session
        code = run_chat(
            manifest,
            names[0] if names else None,
            options,
            system=system,
            terminal=sys.stdin.isatty() and sys.stdout.isatty(),
        )
    sys.exit(code)


def _smoke_target(target: str | None, names: tuple[str, ...]) -> tuple[Path, tuple[str, ...]]:
    """``smoke-test [MANIFEST] [NAME...]``: a first argument that is no file is a name."""
    if target is not None and (Path(target).is_file() or target.endswith((".yaml", ".yml"))):
        return Path(target), names
    if target is not None:
        names = (target, *names)
    from .manifest_loader import manifest_or_last_applied

    return manifest_or_last_applied(), names


@main.group(cls=ProvisionSubgroup)
def render() -> None:
    """Write the manifest as another system's objects, offline (no cluster or hub is contacted)."""


@render.command("kubernetes")
@manifest_argument
@click.option(
    "-o", "--output", type=click.Path(file_okay=False, path_type=Path), help="Write one file per object here."
)
@click.option("--stdout", "to_stdout", is_flag=True, help="Print one multi-document YAML stream instead.")
@click.option("--namespace", help="metadata.namespace of every object (default: kubectl's current one).")
@click.option("--storage-class", help="storageClassName of the volume claims (default: the cluster's).")
@click.option("--gpus-per-node", type=click.IntRange(1, 64), help="What `gpus: all` means in the cluster.")
@json_option
@_handle_errors
def render_kubernetes(
    manifest: Path | None,
    output: Path | None,
    to_stdout: bool,
    namespace: str | None,
    storage_class: str | None,
    gpus_per_node: int | None,
    as_json: bool,
) -> None:
    """Deployments, Services, volume claims and a verified download step, from the manifest and its lock."""
    from .errors import RenderError
    from .render.kubernetes import RenderOptions, check_options
    from .render.output import render_manifest, stream, write_dir
    from .report import print_json
    from .report.render import print_render, render_dict

    if (output is None) == (not to_stdout) or (to_stdout and as_json):
        raise RenderError("give exactly one of -o DIR and --stdout", hint="--json goes with -o DIR")
    options = check_options(RenderOptions(namespace, storage_class, gpus_per_node))
    rendered = render_manifest(_load(manifest), options)
    written, removed = write_dir(output, rendered.objects) if output is not None else ([], [])
    if to_stdout:
        sys.stdout.write(stream(rendered.objects))
    if as_json:
        print_json(render_dict(rendered, namespace, written, removed))
    else:
        print_render(rendered, namespace, written, removed, to_stderr=to_stdout)


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
