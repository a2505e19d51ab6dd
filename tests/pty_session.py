"""Drive ``provision`` on a pseudo-terminal as a person would: type lines, press Ctrl-C, read.

The child is a session leader whose controlling terminal is the pty, so Ctrl-C (``\\x03``)
written to the terminal reaches it as SIGINT through the line discipline, as at a real shell.
"""

from __future__ import annotations

import os
import re
import select
import subprocess
import sys
import time
from collections.abc import Mapping

from tests.cli_runner import REPO_ROOT

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


# Run in the child, a new session's leader: take the pty (its stdin) as controlling terminal, then exec.
_TAKE_TERMINAL = (
    "import fcntl, os, sys, termios; fcntl.ioctl(0, termios.TIOCSCTTY, 0); "
    "os.execv(sys.executable, [sys.executable, '-m', 'provision', *sys.argv[1:]])"
)


class Terminal:
    def __init__(self, *args: str, env: Mapping[str, str] | None = None) -> None:
        self.leader, follower = os.openpty()
        self.process = subprocess.Popen(
            [sys.executable, "-c", _TAKE_TERMINAL, *args],
            cwd=REPO_ROOT,
            stdin=follower,
            stdout=follower,
            stderr=follower,
            env={**os.environ, **(env or {}), "COLUMNS": "120"},
            start_new_session=True,
        )
        os.close(follower)
        self.raw = bytearray()
        self.mark = 0  # expect() searches from here

    @property
    def text(self) -> str:
        """What the terminal showed, escape sequences removed."""
        return _ANSI.sub("", self.raw.decode(errors="replace")).replace("\r\n", "\n")

    def send(self, data: str) -> None:
        os.write(self.leader, data.encode())

    def line(self, text: str) -> None:
        """Type ``text`` and Enter, then skip past the terminal's echo of it."""
        self.send(text + "\r")
        self.expect(text + "\n")

    def expect(self, wanted: str, timeout: float = 60) -> str:
        """Read until ``wanted`` appears after the mark; move the mark past it; return what came before it."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.text.find(wanted, self.mark)
            if found >= 0:
                before = self.text[self.mark : found]
                self.mark = found + len(wanted)
                return before
            left = deadline - time.monotonic()
            if left <= 0 or not self._read(left):
                raise AssertionError(f"{wanted!r} did not appear; the terminal shows:\n{self.text[self.mark :]}")

    def pending(self, settle: float = 0.3) -> str:
        """Whatever has arrived after the mark (reading until nothing comes for ``settle`` s)."""
        while self._read(settle):
            pass
        return self.text[self.mark :]

    def arrived(self, timeout: float) -> str:
        """What has arrived after the mark, after waiting at most ``timeout`` for the next bytes
        (unlike :meth:`pending`, it does not read on while a stream keeps coming)."""
        self._read(timeout)
        return self.text[self.mark :]

    def close(self, timeout: float = 30) -> int:
        """Wait for the child to end (killing it after ``timeout``); its exit code. Safe to call twice."""
        if self.leader < 0:
            return self.process.wait()
        try:
            while self._read(1):
                pass
            return self.process.wait(timeout=timeout)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            os.close(self.leader)
            self.leader = -1

    def _read(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.leader], [], [], timeout)
        if not ready:
            return False
        try:
            chunk = os.read(self.leader, 65536)
        except OSError:  # EIO: the child closed the terminal
            return False
        self.raw += chunk
        return bool(chunk)
