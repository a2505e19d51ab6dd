"""SIGINT and SIGTERM: stop promptly, keep what is on disk, restore the terminal, say so.

The first signal sets :data:`CANCELLED` (download workers check it at every chunk and stop,
keeping their partial files for the rerun to resume) and raises :class:`Interrupted` in the
main thread, which unwinds through the reconciler: the progress display stops, the run lock is
released and the CLI reports the interrupt (a JSON document with ``--json``) and exits
``128 + signal`` (130 for SIGINT, 143 for SIGTERM). Should the unwinding take longer than
:data:`GRACE_SECONDS` (a worker stuck in a silent read, a library call that does not return),
a watchdog reports and exits anyway; a second signal exits at once. Every file provision
writes is written atomically or resumable, so exiting at any point loses nothing but the
bytes in flight.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

GRACE_SECONDS = 1.0
CANCELLED = threading.Event()
_SHOW_CURSOR = b"\x1b[?25h"


class Interrupted(KeyboardInterrupt):
    """Raised in the main thread by the first signal, and by workers that saw :data:`CANCELLED`."""

    def __init__(self, signum: int = signal.SIGINT) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def check_cancelled() -> None:
    """Raise :class:`Interrupted` once a signal asked the run to stop (cheap: call it per chunk)."""
    if CANCELLED.is_set():
        raise Interrupted(_received or signal.SIGINT)


def cancellable_sleep(seconds: float) -> None:
    """``time.sleep`` that a signal cuts short (retry back-offs run in worker threads)."""
    if CANCELLED.wait(seconds):
        check_cancelled()


_received: int | None = None
_report_lock = threading.Lock()
_reported = False


def _report_nothing(signum: int) -> None:
    """The reporter until `handling` installs the command's own."""


_reporter: Callable[[int], None] = _report_nothing


def signum_of(exc: BaseException) -> int:
    """The signal behind an interrupt (a KeyboardInterrupt from elsewhere counts as SIGINT)."""
    return exc.signum if isinstance(exc, Interrupted) else _received or signal.SIGINT


def report_once(signum: int) -> bool:
    """Call the reporter unless it ran already; True when this call reported."""
    global _reported
    with _report_lock:
        if _reported:
            return False
        _reported = True
    _reporter(signum)
    return True


@contextmanager
def handling(reporter: Callable[[int], None]) -> Iterator[None]:
    """Handle SIGINT and SIGTERM while a command runs; ``reporter`` tells the user (once).

    Only the main thread may set signal handlers; elsewhere (a test calling a command from a
    thread) the defaults stay. The previous handlers are put back afterwards.
    """
    global _reporter
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _reporter = reporter
    previous = {signum: signal.signal(signum, _handle) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        if _received is None:  # after a signal the process is exiting: a second one must still cut it short
            for signum, handler in previous.items():
                signal.signal(signum, handler)


@contextmanager
def interactive() -> Iterator[None]:
    """Ctrl-C belongs to the user while a session runs (``chat``: it stops one answer): a plain
    KeyboardInterrupt, with no cancel event and no watchdog. SIGTERM still stops the process."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _handle(signum: int, frame: FrameType | None) -> None:
    global _received
    if _received is not None:  # the second signal: no more waiting
        _exit_now(_received)
    _received = signum
    CANCELLED.set()
    watchdog = threading.Timer(GRACE_SECONDS, _exit_now, args=(signum,))
    watchdog.daemon = True
    watchdog.start()
    raise Interrupted(signum)


def restore_terminal() -> None:
    """Show the cursor again (a live progress display hides it)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream.isatty():
                os.write(stream.fileno(), _SHOW_CURSOR)
                return
        except (OSError, ValueError):
            continue


def _exit_now(signum: int) -> None:
    try:
        restore_terminal()
        report_once(signum)
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(128 + signum)
