"""The ``provision`` command: parse arguments, call the reconciler, render, map errors to exit codes.

Exit codes are the same for every command: one table, in :mod:`provision.exitcodes`. The
help's layout (summaries, examples, option groups) is :mod:`provision.cli_help`; what each
command does once its arguments are parsed is :mod:`provision.commands`, and what they share
(the error wrapper, manifest loading, progress) is :mod:`provision.cli_support`.

Heavy libraries (torch, transformers, docker, ollama, modelscope, openai) are imported
only inside the commands that need them, so ``provision --help`` stays fast.
"""

from __future__ import annotations

import gc
import os
from pathlib import Path
from typing import Any

import click

from . import __version__
from .cli_help import ProvisionGroup, ProvisionSubgroup
from .cli_support import handle_errors

manifest_argument = click.argument("manifest", required=False, type=click.Path(dir_okay=False, path_type=Path))
json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead of tables.")


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
@handle_errors
def init(**params: Any) -> None:
    """Write a commented starter manifest: a model per MODEL_REF, a deployment each, the smoke test.

    MODEL_REF is a source as the manifest writes it: hf://owner/name, ms://owner/name,
    ollama://name:tag or file://path. It never overwrites a file (exit 2).
    """
    from . import commands  # lazily: start-up loads no command's code

    commands.init(**params)


@main.command()
@manifest_argument
@json_option
@handle_errors
def validate(**params: Any) -> None:
    """Check a manifest without touching anything."""
    from . import commands

    commands.validate(**params)


@main.command()
@manifest_argument
@click.option("--only", multiple=True, metavar="NAME", help="Plan only these models or deployments.")
@click.option("--update", is_flag=True, help="Re-resolve branches and tags instead of following the lock.")
@click.option("--locked", is_flag=True, help="Fail if the lock file would change.")
@click.option("--detailed-exitcode", is_flag=True, help="Exit 0 with no changes, 2 with changes, 1 on error.")
@json_option
def plan(**params: Any) -> None:
    """Show what `apply` would change, and why, without changing anything."""
    from . import commands

    commands.plan(**params)


@main.command()
@manifest_argument
@click.option("--only", multiple=True, metavar="NAME", help="Apply only these models or deployments.")
@click.option("--update", is_flag=True, help="Re-resolve branches and tags and rewrite the lock file.")
@click.option("--locked", is_flag=True, help="Refuse any change to the lock file (CI, production).")
@click.option("--force", is_flag=True, help="Apply even if a deployment looks too big for this machine.")
@click.option("--verify", "verify_all", is_flag=True, help="Re-hash every placed file and fetch again what differs.")
@click.option("--yes", "-y", is_flag=True, help="Remove models no longer in the manifest without asking.")
@json_option
@handle_errors
def apply(**params: Any) -> None:
    """Make this machine match the manifest: download, pull, start; idempotent and resumable."""
    from . import commands

    commands.apply(**params)


@main.command()
@manifest_argument
@json_option
@handle_errors
def status(**params: Any) -> None:
    """What is applied on this machine (offline; state lives in $PROVISION_STATE_DIR)."""
    from . import commands

    commands.status(**params)


@main.command()
@manifest_argument
@json_option
@handle_errors
def verify(**params: Any) -> None:
    """Re-hash downloaded files against the lock file, offline; exit 1 on any problem."""
    from . import commands

    commands.verify(**params)


@main.command()
@manifest_argument
@click.option("--only", multiple=True, metavar="NAME", help="Destroy only these models or deployments.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@json_option
@handle_errors
def destroy(**params: Any) -> None:
    """Remove what provision created for this manifest (only that)."""
    from . import commands

    commands.destroy(**params)


@main.command("check-hardware")
@manifest_argument
@click.option("--gpu", "gpu", metavar="NAME[xN]", help="Judge against GPUs you don't have, e.g. L4, A10Gx2, H100.")
@click.option("--vram", metavar="SIZE[xN]", help="Judge against N GPUs of this memory, e.g. 40GiB, 23034MiBx2.")
@click.option("--list-gpus", is_flag=True, help="Print the GPUs --gpu knows, and exit.")
@json_option
@handle_errors
def check_hardware(**params: Any) -> None:
    """GPUs, VRAM, driver, RAM, disk, Docker GPU runtime, Ollama; with MANIFEST, whether each deployment fits.

    With --gpu or --vram, each deployment is judged against those GPUs instead, and this
    machine's drivers, Docker, images and ports are not probed. Exit 1 when a deployment cannot
    fit (FAIL), 2 for an unknown GPU; nothing is downloaded but config.json files.
    """
    from . import commands

    commands.check_hardware(**params)


@main.command("smoke-test")
@click.argument("target", required=False)
@click.argument("names", nargs=-1)
@click.option("--show", is_flag=True, help="Print the answers as they stream (default with one deployment).")
@click.option("--junit", type=click.Path(dir_okay=False, path_type=Path), help="Also write a JUnit XML report.")
@click.option(
    "--concurrency", type=click.IntRange(1, 64), default=4, show_default=True, help="Deployments tested at once."
)
@json_option
@handle_errors
def smoke_test(**params: Any) -> None:
    """Stream a chat against each deployment: TTFT, ITL, tokens/s, pass/fail.

    TARGET is a manifest, or a deployment name; with no manifest, the one applied last here.
    """
    from . import commands

    commands.smoke_test(**params)


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
@handle_errors
def chat(**params: Any) -> None:
    """Talk to a deployment: streamed, multi-turn; through a pipe, one turn per line.

    At a terminal: /reset, /system TEXT, /exit; Ctrl-C stops the current answer.
    """
    from . import commands

    commands.chat(**params)


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
@handle_errors
def render_kubernetes(**params: Any) -> None:
    """Deployments, Services, volume claims and a verified download step, from the manifest and its lock."""
    from . import commands

    commands.render_kubernetes(**params)


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
