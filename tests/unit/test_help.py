"""Every command's ``--help`` at 80 columns: pinned by a snapshot, and shaped as promised.

The snapshots live in tests/snapshots/help/<command>.txt. After changing a command, an
option or a help text, refresh them with one line and review the diff:

    PROVISION_UPDATE_SNAPSHOTS=1 python -m pytest tests/unit/test_help.py
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from provision.cli import main
from provision.exitcodes import TABLE

SNAPSHOTS = Path(__file__).resolve().parents[1] / "snapshots" / "help"
README = Path(__file__).resolve().parents[2] / "README.md"
UPDATE = os.environ.get("PROVISION_UPDATE_SNAPSHOTS") == "1"
COMMANDS = ["", *sorted(main.commands)]  # "" is `provision --help`


def render_help(command: str) -> str:
    args = [command, "--help"] if command else ["--help"]
    result = CliRunner().invoke(main, args, prog_name="provision", terminal_width=80)
    assert result.exit_code == 0, result.output
    return result.output


def _snapshot(command: str) -> Path:
    return SNAPSHOTS / f"{command or 'provision'}.txt"


@pytest.mark.parametrize("command", COMMANDS)
def test_help_matches_its_snapshot(command: str) -> None:
    text, path = render_help(command), _snapshot(command)
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"no snapshot {path}: run PROVISION_UPDATE_SNAPSHOTS=1 python -m pytest {__file__}"
    assert text == path.read_text(encoding="utf-8"), (
        f"`provision {command} --help` changed: review, then PROVISION_UPDATE_SNAPSHOTS=1 python -m pytest {__file__}"
    )


def test_no_snapshot_of_a_command_that_is_gone() -> None:
    expected = {_snapshot(c).name for c in COMMANDS}
    stale = sorted(p.name for p in SNAPSHOTS.glob("*.txt") if p.name not in expected)
    if UPDATE:
        for name in stale:
            (SNAPSHOTS / name).unlink()
        stale = []
    assert not stale, f"snapshots of commands that no longer exist: {stale}"


@pytest.mark.parametrize("command", COMMANDS)
def test_help_has_a_purpose_examples_and_the_exit_codes(command: str) -> None:
    text = render_help(command)
    assert all(len(line) <= 80 for line in text.splitlines()), "help wider than 80 columns"
    purpose = text.split("\n\n")[1].strip()  # after "Usage: ..."
    assert purpose.endswith(".") and purpose.count(". ") == 0, f"purpose is not one sentence: {purpose!r}"
    examples = re.findall(r"^  \$ provision\b", text, flags=re.MULTILINE) + re.findall(
        r"^  \$ eval ", text, flags=re.MULTILINE
    )
    assert 2 <= len(examples) <= 3, f"expected 2-3 examples, found {len(examples)}"
    codes = text.split("Exit codes:\n", 1)[1]
    for code, meaning in TABLE.items():
        assert re.search(rf"^  {code} +{re.escape(meaning.split()[0])}", codes, flags=re.MULTILINE), code


def test_top_level_lists_every_command_with_its_whole_summary() -> None:
    text = render_help("")
    listing = " ".join(text.split("Commands:\n", 1)[1].split("\n\n", 1)[0].split())
    for name in main.commands:
        summary = " ".join(main.commands[name].get_short_help_str().split())
        assert f"{name} {summary}" in listing, name
        assert not summary.endswith("..."), name


def test_shell_completion_and_version_are_documented() -> None:
    text = render_help("")
    assert "--version" in text
    for shell in ("bash", "zsh", "fish"):
        assert f"_PROVISION_COMPLETE={shell}_source provision" in text


def test_readme_exit_code_table_is_the_one_in_exitcodes() -> None:
    section = README.read_text(encoding="utf-8").split("### Exit codes", 1)[1].split("\n#", 1)[0]
    codes = [int(c) for c in re.findall(r"^\| (\d+) \|", section, flags=re.MULTILINE)]
    assert codes == list(TABLE)
