"""One retry delay for every loop (provision/retry.py), and the API path honouring it."""

from __future__ import annotations

from http.server import BaseHTTPRequestHandler

import pytest

from provision.download import Downloader
from provision.retry import RetryPolicy, parse_retry_after
from tests.fakes._server import FakeServer, Recorded, Request


def test_backoff_doubles_from_the_first_failure_up_to_its_cap() -> None:
    policy = RetryPolicy(backoff=0.5, max_backoff=10.0)
    assert [policy.delay(n) for n in range(1, 8)] == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert policy.delay(0) == 0.5  # no failure yet counts as the first


def test_the_servers_retry_after_wins_up_to_its_own_cap() -> None:
    policy = RetryPolicy(max_backoff=10.0, max_retry_after=60.0)
    assert policy.delay(1, 30.0) == 30.0  # above max_backoff: the server's word, not our cap
    assert policy.delay(5, 0.0) == 0.0
    assert policy.delay(1, 3600.0) == 60.0


@pytest.mark.parametrize(
    ("header", "seconds"),
    [("5", 5.0), ("0.25", 0.25), ("-3", 0.0), ("", None), (None, None), ("Wed, 21 Oct 2015 07:28:00 GMT", None)],
)
def test_retry_after_is_seconds_or_nothing(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header) == seconds


class _BusyOnce(FakeServer):
    """429 with ``Retry-After: 30`` to the first request, then a JSON document."""

    def handle(self, request: Request, handler: BaseHTTPRequestHandler, record: Recorded) -> None:
        if len(self.requests) == 1:
            self.send(handler, record, 429, headers={"Retry-After": "30"})
        else:
            self.send_json(handler, record, 200, {"ok": True})


def test_api_calls_wait_as_long_as_downloads_do() -> None:
    """Both read the policy: a 30 s Retry-After is 30 s for the API too (it was cut to 10 s)."""
    slept: list[float] = []
    with _BusyOnce() as server:
        downloader = Downloader(sleep=slept.append)
        try:
            answer = downloader.get_json(f"{server.url}/api", resource="m", endpoint=server.url)
        finally:
            downloader.close()
    assert (answer.status, answer.json(), slept) == (200, {"ok": True}, [30.0])
