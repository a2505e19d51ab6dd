"""File hashing, tuned to keep up with ``sha256sum`` (hashlib releases the GIL on big reads)."""

from __future__ import annotations

import hashlib
from pathlib import Path

_BLOCK = 4 << 20


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    buffer = bytearray(_BLOCK)
    view = memoryview(buffer)
    with path.open("rb", buffering=0) as handle:
        while size := handle.readinto(buffer):
            digest.update(view[:size])
    return digest.hexdigest()
