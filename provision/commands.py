"""What each ``provision`` command does once click has parsed its arguments.

``cli.py`` declares the commands, their options and help; each command's body passes its
options, as click names them, to the function of the same name here, whose parameters give
their types. Every import of a heavy module stays inside the function that needs it, so
``provision --help`` never loads them.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from . import exitcodes
from .cli_support import handle_errors, load, progress, run_options, smoke_target
from .errors import ProvisionError, UsageError

if TYPE_CHECKING:
    from .fit import DeploymentFit
    from .hardware import Finding


def init(model_refs: tuple[str, ...], output: Path | None, as_json: bool) -> None:
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


def validate(manifest: Path | None, as_json: bool) -> None:
    from .files import plural
    from .report import console, literal, print_json

    loaded = load(manifest)
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


def plan(
    manifest: Path | None, only: tuple[str, ...], update: bool, locked: bool, detailed_exitcode: bool, as_json: bool
) -> None:
    try:
        code = _plan(manifest, only, update, locked, detailed_exitcode, as_json)
    except SystemExit as exc:
        # Terraform's convention: with --detailed-exitcode every error is 1, since 2 means changes.
        if detailed_exitcode and exc.code not in (0, None, 130, 143):
            sys.exit(1)
        raise
    sys.exit(code)


@handle_errors
def _plan(
    manifest: Path | None, only: tuple[str, ...], update: bool, locked: bool, detailed_exitcode: bool, as_json: bool
) -> int:
    from .credentials import token_routes
    from .reconciler import Reconciler
    from .report import action_dict, print_json, render_plan

    with Reconciler(load(manifest)) as reconciler:
        result = reconciler.plan(run_options(only, update, locked))
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
    from dataclasses import replace

    from .reconciler import Reconciler
    from .report import outcome_dict, print_json, render_outcomes

    loaded = load(manifest)
    bars = progress(as_json)
    with Reconciler(loaded, progress=bars) as reconciler:
        options = run_options(only, update, locked, force, verify_all, yes)
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
        with bars:
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


def status(manifest: Path | None, as_json: bool) -> None:
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
    with Reconciler(load(manifest)) as reconciler:
        rows = reconciler.status()
        servers = reconciler.servers()
    if as_json:
        print_json({"resources": [row.as_dict() for row in rows], "servers": [vars(server) for server in servers]})
    else:
        render_status(rows, servers)


def verify(manifest: Path | None, as_json: bool) -> None:
    from .reconciler import Reconciler
    from .report import print_json
    from .report.verify import render_verify, verify_dict

    with Reconciler(load(manifest)) as reconciler:
        problems = reconciler.verify()
        unlocked = reconciler.unlocked_models()
        checked = sum(len(e.get("files", {})) for e in reconciler.lock.models.values())
        lock_path = reconciler.manifest.lock_path
    if as_json:
        print_json(verify_dict(problems, unlocked, checked, lock_path))
    else:
        render_verify(problems, unlocked, checked, lock_path, f"provision apply {manifest or ''}".strip())
    sys.exit(exitcodes.FAILED if problems or unlocked else exitcodes.OK)


def destroy(manifest: Path | None, only: tuple[str, ...], yes: bool, as_json: bool) -> None:
    from .reconciler import Reconciler
    from .report import console, outcome_dict, print_json, render_outcomes, render_plan

    with Reconciler(load(manifest)) as reconciler:  # secrets resolve on use: removing needs none
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


def check_hardware(manifest: Path | None, gpu: str | None, vram: str | None, list_gpus: bool, as_json: bool) -> None:
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

        loaded = load(manifest)
        with Reconciler(loaded) as reconciler:
            report = (
                preflight_for(reconciler, target)
                if target
                else run_preflight(reconciler, reconciler.plan(run_options(())))
            )
        inventory, fits, findings = report.inventory, report.fits, report.findings
    if as_json:
        print_json(hardware_dict(inventory, fits, findings, target))
    else:
        render_hardware(inventory, fits, findings)
    levels = [f.level for fit in fits for f in fit.findings] + [f.level for f in findings]
    sys.exit(1 if Level.FAIL in levels else 0)


def smoke_test(
    target: str | None, names: tuple[str, ...], show: bool, junit: Path | None, concurrency: int, as_json: bool
) -> None:
    from .reconciler import Reconciler
    from .report import print_json
    from .report.smoke import StreamPrinter, print_smoke, smoke_dict, write_junit
    from .smoke import run_many

    manifest_path, names = smoke_target(target, names)
    with Reconciler(load(manifest_path)) as reconciler:
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


def chat(
    target: str,
    deployment: str | None,
    system: str | None,
    no_stream: bool,
    stats: bool,
    hide_thinking: bool,
    **sampling: Any,
) -> None:
    from . import signals
    from .chat import ChatOptions, run_chat

    manifest, names = smoke_target(target, (deployment,) if deployment else ())
    options = ChatOptions(
        stream=not no_stream,
        stats=stats,
        hide_thinking=hide_thinking,
        sampling={k: v for k, v in sampling.items() if v is not None},
    )
    with signals.interactive():  # Ctrl-C stops one answer, not the session
        code = run_chat(
            manifest,
            names[0] if names else None,
            options,
            system=system,
            terminal=sys.stdin.isatty() and sys.stdout.isatty(),
        )
    sys.exit(code)


def render_kubernetes(
    manifest: Path | None,
    output: Path | None,
    to_stdout: bool,
    namespace: str | None,
    storage_class: str | None,
    gpus_per_node: int | None,
    as_json: bool,
) -> None:
    from .errors import RenderError
    from .render.kubernetes import RenderOptions, check_options
    from .render.output import render_manifest, stream, write_dir
    from .report import print_json
    from .report.render import print_render, render_dict

    if (output is None) == (not to_stdout) or (to_stdout and as_json):
        raise RenderError("give exactly one of -o DIR and --stdout", hint="--json goes with -o DIR")
    options = check_options(RenderOptions(namespace, storage_class, gpus_per_node))
    rendered = render_manifest(load(manifest), options)
    written, removed = write_dir(output, rendered.objects) if output is not None else ([], [])
    if to_stdout:
        sys.stdout.write(stream(rendered.objects))
    if as_json:
        print_json(render_dict(rendered, namespace, written, removed))
    else:
        print_render(rendered, namespace, written, removed, to_stderr=to_stdout)
