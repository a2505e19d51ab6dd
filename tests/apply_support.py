"""Helpers shared by the `provision apply` tests against the hub fakes."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

from provision import segments
from tests.manifest_files import write_manifest


def payload(n: int, seed: int) -> bytes:
    """``n`` deterministic bytes that differ per ``seed`` (so a mix-up is visible)."""
    block = hashlib.sha256(str(seed).encode()).digest()
    return block * (n // 32) + block[: n % 32]


def kill_when_partial(process: subprocess.Popen[str], partial_dir: Path, *, at_least: int, timeout: float = 30) -> int:
    """SIGKILL ``process`` once a ``.part`` file under ``partial_dir`` holds ``at_least`` bytes;
    returns how many bytes the largest partial file kept (see :func:`partial_sizes`)."""
    deadline = time.monotonic() + timeout
    while True:
        sizes = partial_sizes(partial_dir)
        largest = max(sizes, key=sizes.__getitem__, default=None)
        if (largest is not None and sizes[largest] > at_least) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert largest is not None and sizes[largest] > at_least, (
        f"no partial file under {partial_dir} passed {at_least} bytes within {timeout} s: {sizes}"
    )
    return partial_sizes(partial_dir)[largest]


def partial_sizes(partial_dir: Path) -> dict[Path, int]:
    """Bytes each ``.part`` file holds: its size, or for a file fetched as ranges (it has holes)
    the bytes its progress record says are on disk. Small files are placed (renamed away) all the
    time, so one listed a moment ago may be gone."""
    sizes = {}
    for part in partial_dir.glob("*.part") if partial_dir.exists() else ():
        try:
            size = part.stat().st_size
            record = segments.record_path(part)
            if record.exists():  # a written slot names the file's size; read_record checks the rest
                raw = record.read_bytes()
                named = [
                    json.loads(slot.split(b"\n")[0])["size"]
                    for slot in (raw[:4096], raw[4096:])
                    if slot.startswith(b"{")
                ]
                ranges = segments.read_record(part, named[0]) if named else None
                size = sum(r.done - r.start for r in ranges or [])
        except (FileNotFoundError, ValueError):
            continue
        sizes[part] = size
    return sizes


# A small model repo as the hubs serve it: config, tokenizer, one LFS shard, a file in a
# subfolder, and a README that include patterns leave out.
BIG = payload(3 << 20, 1)
TINY_FILES = {
    "config.json": b'{"architectures": ["Qwen3ForCausalLM"], "hidden_size": 64}',
    "tokenizer.json": b'{"version": "1.0"}',
    "model.safetensors": BIG,
    "sub/extra.bin": payload(200_000, 2),
    "README.md": b"# tiny",
}
OTHER_FILES = {"config.json": b"{}", "weights.bin": payload(50_000, 3)}


def assert_tiny_placed(model_dir: Path) -> None:
    """TINY_FILES, as an include of json, safetensors and ``sub/*`` selects them, all in place
    byte for byte, and no partial file left behind."""
    for path in ("config.json", "tokenizer.json", "model.safetensors", "sub/extra.bin"):
        assert (model_dir / path).read_bytes() == TINY_FILES[path]
    assert not (model_dir / "README.md").exists()  # excluded by include
    assert not list((model_dir / ".cache").rglob("*.part"))


_SETTINGS_KEY = {"hf": "huggingface", "ms": "modelscope"}


def hub_manifest(tmp_path: Path, endpoint: str, scheme: str = "hf", **repos: str) -> Path:
    """``tmp_path/m.yaml``: models under ``models/``, the hub at ``endpoint``, one model per
    ``name=repo`` from ``scheme://``."""
    models = "".join(f"  {name}: {{source: '{scheme}://{repo}'}}\n" for name, repo in repos.items())
    return write_manifest(
        tmp_path,
        f"version: 1\nsettings:\n  models_dir: models\n"
        f"  {_SETTINGS_KEY[scheme]}: {{endpoint: '{endpoint}'}}\nmodels:\n{models}",
    )
