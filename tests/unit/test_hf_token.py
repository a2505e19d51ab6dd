"""provision finds the same Hugging Face token as huggingface_hub itself, for each place it can be.

huggingface_hub reads its paths at import, so each case runs both in a fresh interpreter.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli_runner import REPO_ROOT

PROBE = """
import json
from huggingface_hub.utils import build_hf_headers
from provision.sources.huggingface import implicit_token
print(json.dumps({"hub": build_hf_headers().get("authorization"), "ours": implicit_token()}))
"""


def tokens(env: dict[str, str]) -> tuple[str | None, str | None]:
    """(the bearer token huggingface_hub would send, provision's implicit token)."""
    result = subprocess.run(
        [sys.executable, "-c", PROBE],
        env={**os.environ, **env},
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    seen = json.loads(result.stdout)
    hub = seen["hub"].removeprefix("Bearer ") if seen["hub"] else None
    return hub, seen["ours"]


@pytest.mark.parametrize(
    ("env", "token_file", "expected"),
    [
        ({}, None, None),  # not logged in
        ({"HF_TOKEN": "hf_env"}, "hf_file", "hf_env"),  # the variable wins over the file
        ({"HUGGING_FACE_HUB_TOKEN": "hf_old"}, None, "hf_old"),
        ({}, " hf_file\n", "hf_file"),  # `hf auth login`'s file, under $HF_HOME
        ({"HF_TOKEN_PATH": "{tmp}/elsewhere/token"}, "hf_moved", "hf_moved"),
        ({"HF_HUB_DISABLE_IMPLICIT_TOKEN": "1", "HF_TOKEN": "hf_env"}, "hf_file", None),
    ],
)
def test_same_token_as_huggingface_hub(
    tmp_path: Path, env: dict[str, str], token_file: str | None, expected: str | None
) -> None:
    env = {key: value.format(tmp=tmp_path) for key, value in env.items()}
    env["HF_HOME"] = str(tmp_path / "hf-home")
    if token_file is not None:
        path = Path(env.get("HF_TOKEN_PATH", tmp_path / "hf-home" / "token"))
        path.parent.mkdir(parents=True)
        path.write_text(token_file)
    assert tokens(env) == (expected, expected)
