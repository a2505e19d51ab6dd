"""Hostile manifests fail fast and clearly: alias bombs, huge files, special files, symlink loops,
malformed ``${...}``; and secrets are resolved only when the deployment that needs them is used.

Each refusal is exit 2 naming the file (and line, where there is one) with a hint. Parsing time
is printed (``-s``); a subprocess timeout, not a timing assertion, catches a hang (on main an
alias bomb ran 36 s, a FIFO forever).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from provision.errors import ManifestError
from provision.manifest import OpenAIDeployment
from provision.manifest_loader import SecretReference, load_manifest, parse_manifest
from provision.yaml_loader import MAX_MANIFEST_BYTES, MAX_NODES
from tests.cli_runner import REPO_ROOT, run_cli
from tests.manifest_files import write_manifest
from tests.typed import instance, known

HANG_LIMIT = 30  # seconds before a run counts as hung


def refused(path: Path | str, *expected: str) -> str:
    """Run ``validate`` on ``path``; it must exit 2 with the file, a hint and ``expected`` in stderr."""
    started = time.monotonic()
    result = run_cli("validate", path, timeout=HANG_LIMIT)
    print(f"\nvalidate {Path(path).name}: exit {result.returncode} in {time.monotonic() - started:.2f} s")
    assert result.returncode == 2, result.stdout + result.stderr
    assert str(path) in result.stderr and "hint:" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr, result.stderr
    for text in expected:
        assert text in result.stderr, result.stderr
    return result.stderr


def alias_bomb(levels: int = 9) -> str:
    """Each level is a list of ten aliases to the one before: 10**levels values from ~1 KiB."""
    lines = ["version: 1", "l0: &l0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


# -- bounded parsing -------------------------------------------------------------------------


def test_an_alias_bomb_is_refused(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, alias_bomb(), name="bomb.yaml")
    refused(manifest, f"more than {MAX_NODES} values", "aliases")


def test_the_budget_counts_alias_expansions_not_text(tmp_path: Path) -> None:
    """A few lines that expand past the budget are refused; the same lines with fewer levels load."""
    with pytest.raises(ManifestError, match="more than"):
        parse_manifest(alias_bomb(levels=5), file="m.yaml", env={})  # 10**5 values
    with pytest.raises(ManifestError, match="unknown field"):  # within the budget: validated normally
        parse_manifest(alias_bomb(levels=3), file="m.yaml", env={})


def test_a_manifest_over_the_size_cap_is_refused(tmp_path: Path) -> None:
    line = "# " + "x" * 1021 + "\n"
    manifest = write_manifest(tmp_path, "version: 1\n" + line * (MAX_MANIFEST_BYTES // len(line) + 2), name="huge.yaml")
    assert manifest.stat().st_size > MAX_MANIFEST_BYTES
    refused(manifest, "1 MiB")


def test_a_large_but_legal_manifest_still_loads(tmp_path: Path) -> None:
    manifest = write_manifest(
        tmp_path, "version: 1\n" + ("# " + "x" * 1000 + "\n") * 900, name="comments.yaml"
    )  # ~0.9 MiB of comments
    started = time.monotonic()
    load_manifest(manifest)
    print(f"\n0.9 MiB manifest parsed in {time.monotonic() - started:.3f} s")


def test_a_fifo_is_refused_without_hanging(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    refused(fifo, "FIFO")


def test_dev_zero_is_refused() -> None:
    refused("/dev/zero", "device")


def test_a_directory_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "folder.yaml"
    folder.mkdir()
    with pytest.raises(ManifestError, match="a directory") as caught:
        load_manifest(folder)
    assert caught.value.hint and caught.value.file == str(folder)
    assert run_cli("validate", folder).returncode == 2


def test_a_symlink_loop_is_refused(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").symlink_to(tmp_path / "b.yaml")
    (tmp_path / "b.yaml").symlink_to(tmp_path / "a.yaml")
    refused(tmp_path / "a.yaml", "symlink loop")


def test_a_symlink_to_a_manifest_is_fine(tmp_path: Path) -> None:
    write_manifest(tmp_path, "version: 1\n", name="real.yaml")
    (tmp_path / "link.yaml").symlink_to(tmp_path / "real.yaml")
    assert run_cli("validate", tmp_path / "link.yaml").returncode == 0


def test_invalid_utf8_names_the_line(tmp_path: Path) -> None:
    manifest = tmp_path / "latin1.yaml"
    manifest.write_bytes(b"version: 1\n# caf\xe9\n")
    refused(manifest, f"{manifest}:2:", "UTF-8")


# -- ${...} ----------------------------------------------------------------------------------

ENDPOINT = "version: 1\nsettings:\n  huggingface:\n    endpoint: '{}'\n"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("${}", "empty ${}"),
        ("http://a${", "unclosed ${"),
        ("${A:-${B}}", "nested"),
        ("${1A}", "is not a reference"),
        ("${A-b}", "is not a reference"),
        ("${A B}", "is not a reference"),
    ],
)
def test_a_malformed_reference_is_an_error_naming_line_and_field(value: str, message: str) -> None:
    with pytest.raises(ManifestError) as caught:
        parse_manifest(ENDPOINT.format(value), file="m.yaml", env={"A": "1", "B": "2"})
    error = caught.value
    assert message in error.message
    assert (error.file, error.line, error.field) == ("m.yaml", 4, "settings.huggingface.endpoint")
    assert error.hint


def test_an_empty_variable_is_reported_as_empty_not_unset() -> None:
    with pytest.raises(ManifestError, match="environment variable EP is empty"):
        parse_manifest(ENDPOINT.format("${EP}"), file="m.yaml", env={"EP": ""})
    with pytest.raises(ManifestError, match="environment variable EP is not set"):
        parse_manifest(ENDPOINT.format("${EP}"), file="m.yaml", env={})


def test_a_malformed_reference_in_a_secret_fails_at_load() -> None:
    text = "version: 1\nsettings:\n  huggingface: {token: '${HF_TOKEN'}\n"
    with pytest.raises(ManifestError, match="unclosed") as caught:
        parse_manifest(text, file="m.yaml", env={})
    assert caught.value.field == "settings.huggingface.token"


# -- secrets are resolved when used ----------------------------------------------------------

HOSTED = """\
version: 1
settings:
  models_dir: models
models:
  tiny: {source: 'file://src'}
deployments:
  api:
    engine: openai
    base_url: http://127.0.0.1:9/v1
    served_model: chat
    api_key: "${PROVISION_SECRET_NOT_SET_7C1D}"
"""


def test_an_unset_secret_is_an_error_only_when_used() -> None:
    manifest = parse_manifest(HOSTED, file="m.yaml", env={})
    key = instance(manifest.deployments["api"], OpenAIDeployment).api_key
    assert isinstance(key, SecretReference) and key.variables == ("PROVISION_SECRET_NOT_SET_7C1D",)
    assert "**********" in repr(manifest) and "sk-" not in repr(manifest) + repr(manifest.model_dump())
    with pytest.raises(ManifestError, match="PROVISION_SECRET_NOT_SET_7C1D is not set") as caught:
        key.get_secret_value()
    assert (caught.value.line, caught.value.field) == (11, "deployments.api.api_key")
    hosted = instance(
        parse_manifest(HOSTED, env={"PROVISION_SECRET_NOT_SET_7C1D": "sk-1"}).deployments["api"], OpenAIDeployment
    )
    assert known(hosted.api_key).get_secret_value() == "sk-1"


def test_validate_plan_apply_destroy_need_no_secret(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "config.json").write_text("{}")
    manifest = write_manifest(tmp_path, HOSTED)
    for command in (("validate",), ("plan",), ("apply",), ("status",), ("destroy", "--yes")):
        result = run_cli(*command, manifest)
        assert result.returncode == 0, f"{command}: {result.stdout}{result.stderr}"


def test_the_hosted_deployment_smoke_test_names_the_missing_secret(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, HOSTED.replace("  tiny: {source: 'file://src'}\n", "  {}\n"))
    result = run_cli("smoke-test", manifest)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "PROVISION_SECRET_NOT_SET_7C1D is not set" in result.stdout + result.stderr


def test_the_shipped_dev_manifest_validates_without_the_api_key() -> None:
    env = {"DEEPSEEK_API_KEY": ""}  # set but empty counts as missing, like unset
    result = run_cli("validate", REPO_ROOT / "manifests" / "dev.yaml", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
