"""The words of ``provision --help``: summaries, examples, option groups and the exit codes.

``cli.py`` only declares commands and options; the classes here lay their help out (every
command gets the exit-code table, its examples and grouped options), so adding a command
or an option to ``cli.py`` needs no change here unless it wants examples or a group.
The snapshot test (tests/unit/test_help_snapshots.py) pins the result; refresh it with
``PROVISION_UPDATE_SNAPSHOTS=1 python -m pytest tests/unit/test_help_snapshots.py``.
"""

from __future__ import annotations

from collections.abc import Sequence

import click

from .exitcodes import TABLE

# command -> the one line `provision --help` lists (never cut; wrapped at the terminal's width)
SUMMARIES: dict[str, str] = {
    "init": "Write a commented starter manifest for model references.",
    "validate": "Check a manifest without touching anything.",
    "plan": "Show what apply would change, and why; change nothing.",
    "apply": "Download, pull, start what the manifest declares; resumable.",
    "status": "What is applied on this machine (offline, from state).",
    "verify": "Re-hash downloaded files against the lock file, offline.",
    "destroy": "Remove what provision created for a manifest, only that.",
    "check-hardware": "GPUs, RAM, disk, Docker, Ollama; whether deployments fit.",
    "smoke-test": "Stream a chat to each deployment: TTFT, tokens/s, pass/fail.",
    "chat": "Talk to a deployment: multi-turn, streamed; a line per turn on a pipe.",
    "render": "Write the manifest as Kubernetes objects, offline, from its lock.",
}

# command -> (command line, what it does)
EXAMPLES: dict[str, Sequence[tuple[str, str]]] = {
    "": (
        ("provision init hf://Qwen/Qwen3-0.6B", "write provision.yaml for one model"),
        ("provision apply && provision smoke-test", "provision it, then prove it answers"),
        ('eval "$(_PROVISION_COMPLETE=bash_source provision)"', "tab completion in bash (see below)"),
    ),
    "init": (
        ("provision init hf://Qwen/Qwen3-0.6B ollama://qwen3:0.6b", "two models, a deployment each"),
        ("provision init -o dev.yaml ms://Qwen/Qwen3-0.6B", "write dev.yaml instead"),
        ("provision init", "a template with one example model to edit"),
    ),
    "validate": (
        ("provision validate", "check ./provision.yaml"),
        ("provision validate manifests/dev.yaml --json", "the models and deployments it declares"),
    ),
    "plan": (
        ("provision plan manifests/dev.yaml", "the changes, with bytes to download"),
        ("provision plan --only qwen3-0.6b", "one model (or deployment) only"),
        ("provision plan --detailed-exitcode", "exit 2 when something would change (CI)"),
    ),
    "apply": (
        ("provision apply manifests/dev.yaml", "reconcile; rerun after a crash to resume"),
        ("provision apply --only qwen3-chat", "one deployment and its model"),
        ("provision apply --locked", "fail instead of changing the lock file (CI)"),
    ),
    "status": (
        ("provision status", "which manifests were applied here, and the state file"),
        ("provision status manifests/dev.yaml", "each model and deployment: ok, missing, drift"),
        ("provision status manifests/dev.yaml --json", "the same, with full sources and revisions"),
    ),
    "verify": (
        ("provision verify manifests/dev.yaml", "every locked file, re-hashed"),
        ("provision verify --json", "missing, corrupt and extra files as JSON"),
    ),
    "destroy": (
        ("provision destroy manifests/dev.yaml", "list what would go, then ask"),
        ("provision destroy --only qwen3-chat --yes", "one deployment, without asking"),
    ),
    "check-hardware": (
        ("provision check-hardware", "this machine: GPUs, driver, RAM, disk, Docker, Ollama"),
        ("provision check-hardware manifests/dev.yaml", "and whether each deployment fits"),
    ),
    "chat": (
        ("provision chat manifests/dev.yaml deepseek-local", "a conversation; /reset, /system, /exit"),
        ("echo hi | provision chat manifests/demo.yaml smollm2-chat", "one turn per line, answers on stdout"),
        ("provision chat dev.yaml deepseek-api --temperature 0 --stats", "greedy, with TTFT and tokens/s"),
    ),
    "render": (
        ("provision render kubernetes -o k8s/", "the manifest as Kubernetes objects, from its lock"),
        ("provision render kubernetes --stdout | kubectl apply -f -", "straight to a cluster"),
    ),
    "kubernetes": (
        ("provision render kubernetes manifests/dev.yaml -o k8s/", "claims, verified download, Deployments"),
        ("provision render kubernetes --namespace llm --gpus-per-node 8 -o k8s/", "what `gpus: all` means"),
        ("provision render kubernetes --stdout > all.yaml", "one stream instead of a folder"),
    ),
    "smoke-test": (
        ("provision smoke-test", "every deployment of the manifest applied last"),
        ("provision smoke-test manifests/dev.yaml qwen3-chat", "one deployment, answer shown"),
        ("provision smoke-test --junit smoke.xml", "also a JUnit report for CI"),
    ),
}

# command -> text after the examples (where files live, how names are read)
NOTES: dict[str, str] = {
    "": (
        "MANIFEST defaults to $PROVISION_MANIFEST, else ./provision.yaml. Set PROVISION_DEBUG=1 "
        "for a traceback on errors. Every command takes --json.\n\n"
        "Shell completion (click's own): one line in ~/.bashrc, ~/.zshrc or\n"
        "~/.config/fish/completions/provision.fish:\n"
        '  eval "$(_PROVISION_COMPLETE=bash_source provision)"\n'
        '  eval "$(_PROVISION_COMPLETE=zsh_source provision)"\n'
        "  _PROVISION_COMPLETE=fish_source provision | source"
    ),
    "plan": "--detailed-exitcode (Terraform's): 0 no changes, 2 changes pending, 1 any error.",
    "status": (
        "State: $PROVISION_STATE_DIR/state.json, else $XDG_STATE_HOME/provision/state.json, "
        "else ~/.local/state/provision/state.json. The lock file is <manifest>.lock.json "
        "beside the manifest."
    ),
    "verify": (
        "Nothing locked yet (no apply has placed a file) is exit 1: there is nothing "
        "to vouch for, and CI running verify after apply must not pass on an empty lock."
    ),
}

# option name -> its group in a command's help; options not listed are under "Options"
OPTION_GROUPS: dict[str, str] = {
    "only": "Selection",
    "update": "Lock file",
    "locked": "Lock file",
    "json": "Output",
    "as_json": "Output",
    "show": "Output",
    "junit": "Output",
}
_GROUP_ORDER = ("Selection", "Lock file", "Options", "Output")


def _write_examples(formatter: click.HelpFormatter, examples: Sequence[tuple[str, str]]) -> None:
    with formatter.section("Examples"):
        for line, what in examples:
            formatter.write_text(f"$ {line}")
            with formatter.indentation():
                formatter.write_text(what)


def _write_exit_codes(formatter: click.HelpFormatter) -> None:
    with formatter.section("Exit codes"):
        formatter.write_dl([(str(code), meaning) for code, meaning in TABLE.items()])


def _write_notes(formatter: click.HelpFormatter, text: str) -> None:
    for block in text.split("\n\n"):
        formatter.write_paragraph()
        for line in block.split("\n"):
            if line.startswith("  "):  # a command to copy: never rewrapped
                formatter.write(f"{'':>{formatter.current_indent}}{line}\n")
            else:
                formatter.write_text(line)


class ProvisionCommand(click.Command):
    """A command whose help has grouped options, examples, notes and the exit codes."""

    def get_short_help_str(self, limit: int = 45) -> str:
        return SUMMARIES.get(self.name or "") or super().get_short_help_str(limit=10_000)

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        groups: dict[str, list[tuple[str, str]]] = {}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is not None and not isinstance(param, click.Argument):
                groups.setdefault(OPTION_GROUPS.get(param.name or "", "Options"), []).append(record)
        for title in sorted(groups, key=lambda g: _GROUP_ORDER.index(g) if g in _GROUP_ORDER else 2):
            with formatter.section(title if title == "Options" else f"{title} options"):
                formatter.write_dl(groups[title])

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        name = self.name or ""
        if name in EXAMPLES:
            _write_examples(formatter, EXAMPLES[name])
        if name in NOTES:
            _write_notes(formatter, NOTES[name])
        _write_exit_codes(formatter)


class ProvisionGroup(click.Group):
    """``provision``: its subcommands are ProvisionCommands; full summaries, then examples."""

    command_class = ProvisionCommand

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, command.get_short_help_str()))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        _write_examples(formatter, EXAMPLES[""])
        _write_notes(formatter, NOTES[""])
        _write_exit_codes(formatter)


class ProvisionSubgroup(click.Group):
    """A command group (``render``) whose help and subcommands' help read like the others'."""

    command_class = ProvisionCommand
    format_epilog = ProvisionCommand.format_epilog
    get_short_help_str = ProvisionCommand.get_short_help_str
