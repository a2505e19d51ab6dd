"""`provision apply` at a terminal: the live progress bars (only drawn when stdout is a TTY)."""

from __future__ import annotations

import fcntl
import os
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path

from tests.apply_support import hub_manifest, payload
from tests.cli_runner import REPO_ROOT
from tests.fakes.hf_hub import FakeHFHub

FILES = {"config.json": b'{"hidden_size": 64}', "model.safetensors": payload(2 << 20, 5)}
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def run_in_terminal(
    args: list[str], env: dict[str, str], timeout: float = 60, *, columns: int = 120
) -> tuple[int, str]:
    """Run ``provision ARGS`` with stdout and stderr on a pseudo-terminal ``columns`` wide;
    (exit code, text seen, without colour codes)."""
    leader, follower = os.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    process = subprocess.Popen(
        [sys.executable, "-m", "provision", *args],
        cwd=REPO_ROOT,
        stdin=subprocess.DEVNULL,
        stdout=follower,
        stderr=follower,
        env={**os.environ, **env, "COLUMNS": str(columns)},
    )
    os.close(follower)
    seen = bytearray()
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the process closed its end
            break
        if not chunk:
            break
        seen += chunk
    os.close(leader)
    return process.wait(timeout=timeout), _ANSI.sub("", seen.decode(errors="replace"))


def test_apply_draws_progress_bars_at_a_terminal(tmp_path: Path) -> None:
    with FakeHFHub() as hub:
        hub.add_repo("org/tiny", FILES)
        manifest = hub_manifest(tmp_path, hub.url, tiny="org/tiny")
        code, text = run_in_terminal(["apply", str(manifest)], {"PROVISION_STATE_DIR": str(tmp_path / "state")})
    assert code == 0, text
    # The last frame (drawn when the bars stop): the model's mark, files and bytes of the total.
    assert "✓ tiny" in text and "2/2 files 2.1/2.1 MB" in text
    assert "Apply: 1 changed" in text
    assert (tmp_path / "models" / "tiny" / "model.safetensors").read_bytes() == FILES["model.safetensors"]
