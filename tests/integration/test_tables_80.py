"""Every table at 80 columns, on a pseudo-terminal and through a pipe: no word folded in two.

What a table prints at 80 columns is compared with what it prints at 400 (where nothing
needs to be shortened): every word must be a word of the wide output, or a shortened form
of one (its start and end around an ellipsis); a fragment such as ``hf://deep`` fails.
Numbers (timings, free memory) change between runs and are accepted as they come.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.cells import cell_len

from tests.apply_support import TINY_FILES
from tests.cli_runner import run_cli
from tests.fakes.hf_hub import FakeHFHub
from tests.fakes.vllm_server import FakeVLLM
from tests.integration.test_terminal import run_in_terminal
from tests.manifest_files import write_manifest

LONG_REPO = "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B-with-a-long-tail"
_NUMBER = re.compile(r"^[(]?[-+]?[\d.,:/]+(ms|s|%|x)?[),.]?$")


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, str]]]:
    """A manifest with long values everywhere, one model applied; the servers it talks to."""
    root = tmp_path_factory.mktemp("tables") / "a-rather-long-folder-name-for-the-project-checkout"
    (root / "src").mkdir(parents=True)
    (root / "src" / "config.json").write_text('{"hidden_size": 8}', encoding="utf-8")
    (root / "config.json").write_text("{}", encoding="utf-8")
    with FakeHFHub() as hub, FakeVLLM(root, ["qwen3"]) as api:
        hub.add_repo(LONG_REPO, TINY_FILES)
        manifest = write_manifest(
            root,
            f"""version: 1
settings: {{models_dir: models, huggingface: {{endpoint: '{hub.url}'}}}}
models:
  deepseek-r1-distill-qwen-1.5b-long: {{source: 'hf://{LONG_REPO}'}}
  local-checkpoint: {{source: 'file://src'}}
deployments:
  deepseek-local-transformers-chat: {{engine: transformers, model: deepseek-r1-distill-qwen-1.5b-long}}
  hosted-api-with-a-long-name: {{engine: openai, base_url: '{api.base_url}', served_model: qwen3}}
smoke_test: {{max_tokens: 8, timeout: 30}}
""",
        )
        env = {"PROVISION_STATE_DIR": str(root / "state"), "OLLAMA_HOST": "http://127.0.0.1:9"}
        assert run_cli("apply", manifest, "--only", "local-checkpoint", env=env).returncode == 0
        yield manifest, env


def _words(text: str) -> list[str]:
    return text.replace("\r", "").split()


def _folded(narrow: str, wide: str) -> list[str]:
    """Words of ``narrow`` that are neither words of ``wide`` nor a shortened form of one."""
    known = set(_words(wide))
    bad = []
    for word in _words(narrow):
        if word in known or _NUMBER.match(word):
            continue
        if "…" in word:
            head, tail = word.split("…")[0], word.split("…")[-1]
            if any(k.startswith(head) and k.endswith(tail) and len(k) > len(head) + len(tail) for k in known):
                continue
        bad.append(word)
    return bad


# check-hardware last: it fetches config.json files, after which the transformers deployment loads
COMMANDS = [("plan",), ("status",), ("smoke-test",), ("verify",), ("check-hardware",)]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
def test_table_reads_at_80_columns_on_a_pipe_and_a_terminal(
    command: tuple[str, ...], scene: tuple[Path, dict[str, str]]
) -> None:
    manifest, env = scene
    args = [*command, str(manifest)]
    wide = run_cli(*args, env={**env, "COLUMNS": "400"})
    piped = run_cli(*args, env={**env, "COLUMNS": "80"})
    _, terminal = run_in_terminal(args, env, columns=80)
    wide_text = wide.stdout + wide.stderr
    for name, text in (("pipe", piped.stdout + piped.stderr), ("terminal", terminal)):
        assert text.strip(), f"{name}: no output"
        # wider only where one word (a long path) cannot be broken without folding it
        too_wide = [line for line in text.replace("\r", "").splitlines() if cell_len(line) > 80 and " " in line.strip()]
        assert not too_wide, f"{name}: lines wider than 80 columns: {too_wide}"
        assert not _folded(text, wide_text), f"{name}: words folded mid-word: {_folded(text, wide_text)}\n{text}"
    if command[0] == "status":
        assert "hf://…" in piped.stdout  # the long source, shortened: scheme kept, tail kept
        assert LONG_REPO in wide.stdout
        assert re.search(r"deepsee\S*-chat\s+transformers\s+\S+\s+no\s+missing", piped.stdout), (
            "a transformers deployment whose model folder is missing is 'missing'"
        )


def test_smoke_token_counts_are_counts_with_a_footnote(scene: tuple[Path, dict[str, str]]) -> None:
    manifest, env = scene
    result = run_cli("smoke-test", manifest, "hosted-api-with-a-long-name", env={**env, "COLUMNS": "80"})
    assert result.returncode == 0, result.stdout + result.stderr
    row = next(line for line in result.stdout.splitlines() if line.startswith("hosted"))
    cells = row.split()
    assert cells[cells.index("pass") + 4].isdigit(), f"tokens is a plain count: {row}"
    assert "tokens: counted by the server (or engine)" in result.stdout
