"""What all connections to one host share: a cap on how many are open, and a 429 back-off.

Several files, and several ranges of one file, download at once. A mirror counts connections
per client and answers ``429 Too Many Requests`` (with ``Retry-After``) to the whole client,
not to the one connection that asked: so when one request is told to wait, every request to
that host waits until then, and no new one is sent.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

# Connections per host unless the manifest says otherwise (settings.max_connections_per_host).
# On a hub capping each connection at 16 MiB/s (benchmarks/bench_segments.py, REPORT.md) every
# step up went faster (4, 8, 16, 32); 32 is the least that beats hfd.sh's aria2c on 4 x 64 MiB
# (1.08 s against 1.17 s; 16 took 1.54 s), which opens up to 20 (4 per file, 5 files at once).
# aria2c -x16 opens 16 per file (80 for 5), hf_transfer 100 per file; a host that objects gets
# its 429 back-off. On a fast link the ramp keeps a file to one stream whatever this says.
DEFAULT_CONNECTIONS_PER_HOST = 32


class HostGate:
    """Per host (an URL's scheme and netloc): a connection semaphore and a not-before time."""

    def __init__(
        self,
        connections: int = DEFAULT_CONNECTIONS_PER_HOST,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.connections = max(1, connections)
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._slots: dict[tuple[str, str], threading.BoundedSemaphore] = {}
        self._not_before: dict[tuple[str, str], float] = {}
        self._proven: set[tuple[str, str]] = set()  # see segments.Ramp
        self._queued: dict[tuple[str, str], int] = {}  # requests waiting for one of the host's connections

    @contextmanager
    def slot(self, host: tuple[str, str]) -> Iterator[None]:
        """Hold one of the host's connections for a request; first wait out any back-off."""
        with self._lock:
            semaphore = self._slots.setdefault(host, threading.BoundedSemaphore(self.connections))
            self._queued[host] = self._queued.get(host, 0) + 1
        try:
            semaphore.acquire()
        finally:
            with self._lock:
                self._queued[host] -= 1
        try:
            self.wait(host)
            yield
        finally:
            semaphore.release()

    def queued(self, host: tuple[str, str]) -> int:
        """Requests waiting for one of ``host``'s connections (a connection freed goes to one of them)."""
        with self._lock:
            return self._queued.get(host, 0)

    def wait(self, host: tuple[str, str]) -> None:
        while (left := self.pause_left(host)) > 0:
            self._sleep(left)

    def pause_left(self, host: tuple[str, str]) -> float:
        with self._lock:
            return self._not_before.get(host, 0.0) - self._clock()

    def proven(self, host: tuple[str, str]) -> bool:
        """Whether a file showed that more connections to ``host`` go faster (each is capped)."""
        with self._lock:
            return host in self._proven

    def prove(self, host: tuple[str, str]) -> None:
        with self._lock:
            self._proven.add(host)

    def back_off(self, host: tuple[str, str], seconds: float) -> None:
        """The host said wait ``seconds``: no request to it starts before then."""
        with self._lock:
            until = self._clock() + seconds
            self._not_before[host] = max(self._not_before.get(host, 0.0), until)
