"""Outside text is printed literally: Rich markup in a manifest value, a path or a hub file name
shows as written (and cannot crash the error handler), control characters are shown escaped,
so a hub cannot restyle, rewrite or hide provision's output. Also the plan's summary (errors
counted, hints shown) and the one size format shared by plan and apply.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from provision.files import human_bytes
from provision.report import literal, print_json, printable
from tests.apply_support import hub_manifest, payload
from tests.cli_runner import run_cli
from tests.fakes.hf_hub import Blob, FakeHFHub, RepoFile
from tests.manifest_files import write_manifest

ESC_NAME = "evil\x1b]0;pwned\x07\x1b[2J.bin"  # sets the terminal title, clears the screen
MARKUP_NAME = "[bold]w[/bold].bin"


def assert_no_raw_controls(text: str) -> None:
    raw = [c for c in text if (ord(c) < 0x20 and c not in "\n\t") or 0x7F <= ord(c) < 0xA0]
    assert raw == [], f"raw control characters reached the output: {raw!r}"


# -- the helper ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("[/]", "[/]"),
        ("[bold]x[/bold]", "[bold]x[/bold]"),
        ("a\x1b[31mb", "a\\x1b[31mb"),
        ("line\nforged: ok", "line\\nforged: ok"),
        ("\u202eevil", "\\u202eevil"),
        ("csi\x9b2J", "csi\\x9b2J"),
        ("trailing \\", "trailing \\"),
    ],
)
def test_literal_prints_exactly_the_text_with_controls_escaped(text: str, shown: str) -> None:
    from rich.console import Console

    console = Console(record=True, width=200, color_system=None)
    console.print(f"[red]x[/] {literal(text)}[dim]|[/]")  # markup before and after, as in real use
    assert console.export_text().rstrip("\n") == f"x {shown}|"


def test_printable_keeps_lines_of_a_streamed_answer() -> None:
    assert printable("a\nb\tc\x1b[2J", multiline=True) == "a\nb\tc\\x1b[2J"


def test_json_output_escapes_c1_controls(capsys: pytest.CaptureFixture[str]) -> None:
    print_json({"name": "a\x1b\x9bb\u202e"})
    out = capsys.readouterr().out
    assert_no_raw_controls(out)
    assert "\u202e" not in out and json.loads(out) == {"name": "a\x1b\x9bb\u202e"}


# -- through the CLI -------------------------------------------------------------------------


def test_markup_in_a_manifest_value_does_not_crash_the_error_handler(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, 'version: 1\nmodels: {}\ndeployments:\n  d: {engine: vllm, model: "[/]"}\n')
    result = run_cli("validate", manifest)
    assert result.returncode == 2, result.stderr
    assert "unknown model '[/]'" in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_markup_in_a_path_is_shown_literally(tmp_path: Path) -> None:
    folder = tmp_path / "[bold]red[i]"
    folder.mkdir()
    manifest = write_manifest(folder, "version: 1\nbogus: 1\n")
    result = run_cli("validate", manifest)
    assert result.returncode == 2
    assert f"{manifest}:2: bogus: unknown field" in result.stderr, result.stderr


def test_hub_file_names_are_shown_escaped_and_literal(tmp_path: Path) -> None:
    files = {"config.json": b"{}", ESC_NAME: payload(1000, 1), MARKUP_NAME: payload(1000, 2)}
    with FakeHFHub() as hub:
        hub.add_repo("org/tiny", files)
        manifest = hub_manifest(tmp_path, hub.url, tiny="org/tiny")
        apply = run_cli("apply", manifest)
    outputs = [apply.stdout + apply.stderr]
    assert_no_raw_controls(outputs[0])
    if apply.returncode == 0:  # the names were placed: verify reports them once they are gone
        for name in (ESC_NAME, MARKUP_NAME):
            (tmp_path / "models" / "tiny" / name).unlink()
        verify = run_cli("verify", manifest)
        assert verify.returncode == 1
        outputs.append(verify.stdout + verify.stderr)
    text = "\n".join(outputs)
    assert_no_raw_controls(text)
    assert "evil\\x1b]0;pwned\\x07\\x1b[2J.bin" in text, text
    if apply.returncode == 0:
        assert f"tiny/{MARKUP_NAME}" in text, text


# -- plan summary and sizes ------------------------------------------------------------------


def test_the_plan_summary_counts_errors_and_shows_hints(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "config.json").write_text("{}")
    manifest = write_manifest(
        tmp_path,
        "version: 1\nsettings: {models_dir: models}\nmodels:\n"
        "  good: {source: 'file://src'}\n  lost: {source: 'file://missing'}\n"
        "  gone: {source: 'file://also-missing'}\n",
    )
    assert run_cli("apply", manifest, "--only", "good").returncode == 0
    result = run_cli("plan", manifest)
    assert result.returncode == 1
    assert "Plan: 1 unchanged, 2 errors." in result.stdout, result.stdout
    assert "hint: fix the path in `source: file://...`" in " ".join(result.stdout.split()), result.stdout


def test_a_failed_only_model_is_not_nothing_declared(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, "version: 1\nmodels:\n  lost: {source: 'file://missing'}\n")
    result = run_cli("plan", manifest)
    assert result.returncode == 1
    assert "nothing declared" not in result.stdout and "Plan: 1 error." in result.stdout, result.stdout


@pytest.mark.parametrize(
    ("n", "shown"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1536, "1.5 KiB"),
        (5 << 30, "5.0 GiB"),
        (1 << 50, "1.0 PiB"),
        (1 << 60, "1.0 EiB"),
        (1 << 80, "1.0 YiB"),
        (1 << 100, "1.05e+06 YiB"),
        (-2048, "-2.0 KiB"),
    ],
)
def test_one_size_format(n: int, shown: str) -> None:
    assert human_bytes(n) == shown


def test_plan_and_apply_print_a_huge_size_the_same_way(tmp_path: Path) -> None:
    with FakeHFHub() as hub:
        commit = hub.add_repo("org/huge", {"config.json": b"{}", "w.bin": b"x"})
        blob = Blob(1 << 50, "0" * 40, "a" * 64, data=b"")  # listed as 1 PiB; never served
        hub.repos["org/huge"].commits[commit].files["w.bin"] = RepoFile(blob, lfs=True)
        manifest = hub_manifest(tmp_path, hub.url, huge="org/huge")
        plan = run_cli("plan", manifest)
        apply = run_cli("apply", manifest)
    assert "1.0 PiB" in plan.stdout, plan.stdout
    assert apply.returncode == 1 and "1.0 PiB to download" in apply.stderr, apply.stderr
