"""How long to wait before trying a hub again: one policy for every retry loop.

The server's ``Retry-After`` (seconds) comes first, capped so that a hostile or confused
server cannot park a run for hours; else exponential backoff from ``backoff``, capped at
``max_backoff``. An HTTP-date ``Retry-After`` is not parsed: our own backoff applies.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5  # consecutive failures without progress before giving up
    backoff: float = 0.5  # seconds, doubled each time
    max_backoff: float = 10.0
    max_retry_after: float = 60.0

    def delay(self, failures: int, retry_after: float | None = None) -> float:
        """Seconds to wait after ``failures`` failed tries in a row (the server's word first)."""
        if retry_after is not None:
            return min(retry_after, self.max_retry_after)
        return min(self.backoff * 2.0 ** max(failures - 1, 0), self.max_backoff)


def parse_retry_after(value: str | None) -> float | None:
    """A ``Retry-After`` header in seconds; ``None`` when absent or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


DEFAULT_RETRY = RetryPolicy()
