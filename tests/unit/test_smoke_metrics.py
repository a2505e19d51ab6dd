"""Smoke-test metrics on synthetic streams with known timings, and the runner's guarantees."""

from __future__ import annotations

import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from provision.client.base import ChatEvent, Embeddings, EngineClient
from provision.errors import DeploymentError
from provision.manifest import SmokeTestSettings
from provision.smoke import (
    SmokeJob,
    SmokeResult,
    measure,
    percentile,
    run_job,
    run_many,
    run_one,
    time_per_output_token,
    ttft_and_itl,
)


class FakeClock:
    """Each event's arrival time is set by the stream; the runner reads it through ``clock``."""

    def __init__(self, start: float = 100.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


class ChatClient:
    """The part of an EngineClient a smoke test of chat does not use."""

    def embed(self, texts: Sequence[str]) -> Embeddings:
        raise AssertionError("a chat smoke test does not embed")

    def warm(self) -> None:
        return None


class ScriptedClient(ChatClient):
    """Yields events at scripted (fake) times; ``tokens`` is what ``count_tokens`` answers."""

    def __init__(
        self,
        clock: FakeClock,
        script: list[tuple[float, ChatEvent]],
        *,
        tokens: int | None = None,
        error: Exception | None = None,
    ) -> None:
        self.clock, self.script, self.tokens, self.error = clock, script, tokens, error
        self.closed = False

    def stream_chat(self, settings: SmokeTestSettings) -> Iterator[ChatEvent]:
        start = self.clock.now
        for offset, event in self.script:
            self.clock.now = start + offset
            yield event
        if self.error is not None:
            raise self.error

    def count_tokens(self, text: str) -> int | None:
        return self.tokens

    def close(self) -> None:
        self.closed = True


SETTINGS = SmokeTestSettings(timeout=5)


def test_ttft_and_itl_from_content_times() -> None:
    ttft, itl = ttft_and_itl(10.0, [10.5, 10.6, 10.8])
    assert ttft == pytest.approx(0.5)
    assert itl == pytest.approx((0.1, 0.2))
    assert ttft_and_itl(10.0, []) == (None, ())


def test_tpot_is_decode_time_over_tokens_after_the_first() -> None:
    assert time_per_output_token(latency=2.5, ttft=0.5, output_tokens=11) == pytest.approx(0.2)
    assert time_per_output_token(latency=0.5, ttft=0.5, output_tokens=1) is None
    assert time_per_output_token(latency=0.5, ttft=0.5, output_tokens=9) is None  # one chunk: no decode seen


def test_percentile_interpolates_like_numpy() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == pytest.approx(2.5)
    assert percentile([1.0, 2.0, 3.0, 4.0], 99) == pytest.approx(3.97)
    assert percentile([], 99) is None


def test_measure_ignores_role_and_usage_chunks_and_prefers_server_tokens() -> None:
    timed = [
        (0.2, ChatEvent(text="")),  # role chunk: not the first token
        (0.5, ChatEvent(text="Pa")),
        (0.7, ChatEvent(text="ris")),
        (1.3, ChatEvent(text=".", finish_reason="stop")),
        (1.4, ChatEvent(output_tokens=7)),  # usage chunk
    ]
    m = measure(0.0, timed, 1.5, count_tokens=lambda text: 99)
    assert m.ttft == pytest.approx(0.5)
    assert m.itl == pytest.approx((0.2, 0.6))
    assert m.latency == pytest.approx(1.3)
    assert m.total_s == pytest.approx(1.5)
    assert (m.output_tokens, m.token_source) == (7, "server")
    assert m.tpot == pytest.approx(0.8 / 6)
    assert m.tokens_per_s == pytest.approx(6 / 0.8)
    assert (m.text, m.finish_reason) == ("Paris.", "stop")


def test_latency_ends_at_the_finish_chunk_as_in_vllm_bench_serve() -> None:
    # vLLM's stream for an answer ending with EOS: text chunks, then a chunk with no text and
    # finish_reason "stop" one decode step later, then usage counting EOS (4 text tokens + EOS).
    timed = [
        (0.5, ChatEvent(text="The")),
        (0.6, ChatEvent(text=" capital")),
        (0.7, ChatEvent(text=" is")),
        (0.8, ChatEvent(text=" Paris.")),
        (0.9, ChatEvent(finish_reason="stop")),
        (0.95, ChatEvent(output_tokens=5)),
    ]
    m = measure(0.0, timed, 1.0, count_tokens=lambda text: None)
    assert m.latency == pytest.approx(0.9)  # the finish chunk, not the last text (0.8)
    assert m.itl == pytest.approx((0.1, 0.1, 0.1, 0.1))  # the finish chunk is a gap, as vLLM counts it
    assert m.tpot == pytest.approx(0.4 / 4)  # (latency - ttft) / (completion_tokens - 1): 0.1, one per step
    assert m.ttft == pytest.approx(0.5)


def test_token_count_falls_back_to_tokenizer_then_chunks() -> None:
    timed = [(0.1, ChatEvent(text="a")), (0.2, ChatEvent(text="b")), (0.3, ChatEvent(text="c"))]
    assert measure(0.0, timed, 0.3, count_tokens=lambda t: 5).token_source == "tokenizer"
    by_chunks = measure(0.0, timed, 0.3, count_tokens=lambda t: None)
    assert (by_chunks.output_tokens, by_chunks.token_source) == (3, "chunks")


def test_run_one_computes_metrics_with_an_injected_clock() -> None:
    clock = FakeClock()
    script = [
        (0.25, ChatEvent(text="")),
        (1.0, ChatEvent(text="The")),
        (1.5, ChatEvent(text=" capital")),
        (3.0, ChatEvent(text=" is Paris", finish_reason="length")),
    ]
    client = ScriptedClient(clock, script, tokens=5)
    result = run_one("d", client, SETTINGS, engine="openai", clock=clock)
    assert result.passed, result.reason
    assert result.ttft == pytest.approx(1.0)
    assert result.itl_mean == pytest.approx(1.0)
    assert result.itl_median == pytest.approx(1.0)
    assert result.itl_p99 == pytest.approx(1.49)  # gaps 0.5 and 1.5
    assert result.tpot == pytest.approx(0.5)
    assert result.tokens_per_s == pytest.approx(2.0)
    assert (result.output_tokens, result.token_source) == (5, "tokenizer")
    assert result.total_s == pytest.approx(3.0)
    assert (result.finish_reason, result.text, result.engine) == ("length", "The capital is Paris", "openai")


def test_run_one_streams_text_to_the_callback() -> None:
    seen: list[tuple[str, str]] = []
    clock = FakeClock()
    client = ScriptedClient(clock, [(0.1, ChatEvent(text="")), (0.2, ChatEvent(text="Hi")), (0.3, ChatEvent(text="!"))])
    run_one("d", client, SETTINGS, clock=clock, on_text=lambda name, text: seen.append((name, text)))
    assert seen == [("d", "Hi"), ("d", "!")]


@pytest.mark.parametrize(
    ("script", "kwargs", "reason"),
    [
        ([(0.1, ChatEvent(text=" \n", finish_reason="stop"))], {}, "empty answer (finish reason: stop)"),
        ([(0.1, ChatEvent(text="London"))], {"expect": "(?i)paris"}, "does not match expect /(?i)paris/: 'London'"),
        ([(2.0, ChatEvent(text="Paris"))], {"max_ttft": 1.0}, "TTFT 2.000 s is over max_ttft 1 s"),
        (
            [(0.1, ChatEvent(text="a")), (1.1, ChatEvent(text="b"))],
            {"min_tokens_per_s": 5},
            "1.0 tokens/s is under min_tokens_per_s 5",
        ),
        ([(0.1, ChatEvent(text="ab"))], {"min_tokens_per_s": 5}, "too few tokens (1) to measure tokens/s"),
    ],
)
def test_run_one_judges_answers_and_slos(
    script: list[tuple[float, ChatEvent]], kwargs: dict[str, Any], reason: str
) -> None:
    clock = FakeClock()
    result = run_one("d", ScriptedClient(clock, script), SETTINGS, clock=clock, **kwargs)
    assert not result.passed
    assert reason in (result.reason or "")


def test_an_error_mid_stream_is_a_failure_with_the_partial_metrics() -> None:
    clock = FakeClock()
    error = DeploymentError("the server failed mid-stream: Engine loop has died", hint="see the server's log")
    client = ScriptedClient(clock, [(0.5, ChatEvent(text="Par"))], error=error)
    result = run_one("d", client, SETTINGS, clock=clock)
    assert not result.passed
    assert result.reason == "the server failed mid-stream: Engine loop has died; see the server's log"
    assert result.text == "Par" and result.ttft == pytest.approx(0.5)


def test_a_foreign_exception_becomes_a_one_line_reason() -> None:
    clock = FakeClock()
    client = ScriptedClient(clock, [], error=RuntimeError("first line\nsecond line"))
    result = run_one("d", client, SETTINGS, clock=clock)
    assert (result.passed, result.reason) == (False, "RuntimeError: first line")


class HangingClient(ChatClient):
    """Sends one chunk, then blocks until released: a server that stopped answering."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def stream_chat(self, settings: SmokeTestSettings) -> Iterator[ChatEvent]:
        yield ChatEvent(text="Hel")
        self.release.wait(30)
        yield ChatEvent(text="lo")

    def count_tokens(self, text: str) -> int | None:
        return None

    def close(self) -> None:
        self.release.set()


def test_the_timeout_bounds_a_client_that_hangs() -> None:
    client = HangingClient()
    started = time.monotonic()
    result = run_one("d", client, SmokeTestSettings(timeout=0.5))
    elapsed = time.monotonic() - started
    client.close()
    assert not result.passed
    assert "timed out after 0.5 s (after 1 chunks)" in (result.reason or "")
    assert result.text == "Hel"
    assert elapsed < 5


class SlowClient(ChatClient):
    """Answers after ``delay`` real seconds."""

    def __init__(self, delay: float, text: str) -> None:
        self.delay, self.text = delay, text
        self.closed = False

    def stream_chat(self, settings: SmokeTestSettings) -> Iterator[ChatEvent]:
        time.sleep(self.delay)
        yield ChatEvent(text=self.text, finish_reason="stop")

    def count_tokens(self, text: str) -> int | None:
        return None

    def close(self) -> None:
        self.closed = True


def returning(client: EngineClient) -> Callable[[], EngineClient]:
    return lambda: client


def test_run_many_runs_concurrently_and_keeps_input_order() -> None:
    clients = [SlowClient(1.0, f"answer {i}") for i in range(3)]
    jobs = [SmokeJob(f"d{i}", "openai", returning(c), SETTINGS) for i, c in enumerate(clients)]
    started = time.monotonic()
    results = run_many(jobs, concurrency=4)
    elapsed = time.monotonic() - started
    assert [r.deployment for r in results] == ["d0", "d1", "d2"]
    assert [r.text for r in results] == ["answer 0", "answer 1", "answer 2"]
    assert all(r.passed for r in results)
    assert all(c.closed for c in clients)
    assert elapsed < 2.5  # three 1 s answers, one after the other, would take 3 s


def test_run_many_respects_the_concurrency_bound() -> None:
    jobs = [SmokeJob(f"d{i}", "openai", lambda: SlowClient(0.3, "x"), SETTINGS) for i in range(4)]
    started = time.monotonic()
    run_many(jobs, concurrency=2)
    assert time.monotonic() - started >= 0.6  # two rounds of two


class ColdClient(ScriptedClient):
    """A client whose first use costs ``cold`` seconds (a connection, imports), paid in ``warm``."""

    def __init__(self, clock: FakeClock, script: list[tuple[float, ChatEvent]], *, cold: float, fails: bool) -> None:
        super().__init__(clock, script, tokens=3)
        self.cold, self.fails = cold, fails

    def warm(self) -> None:
        self.clock.now += self.cold
        if self.fails:
            raise ConnectionError("connection refused")


@pytest.mark.parametrize("fails", [False, True])
def test_the_clients_first_use_costs_are_in_load_s_not_in_ttft(fails: bool) -> None:
    clock = FakeClock()
    script = [(0.1, ChatEvent(text="Paris")), (0.3, ChatEvent(text=".", finish_reason="length"))]
    client = ColdClient(clock, script, cold=2.0, fails=fails)
    result = run_job(SmokeJob("d", "vllm", returning(client), SETTINGS), clock=clock)
    assert result.passed, result.reason  # a failed warm-up is left to the request itself
    assert result.load_s == pytest.approx(2.0)
    assert result.ttft == pytest.approx(0.1)
    assert result.tpot == pytest.approx(0.1)  # (0.3 - 0.1) / (3 - 1)
    assert client.closed


def test_a_client_that_cannot_be_made_is_a_failed_result() -> None:
    def connect() -> SlowClient:
        raise DeploymentError("/m is not a model folder", hint="point the deployment at a model")

    [result] = run_many([SmokeJob("local", "transformers", connect, SETTINGS)])
    assert (result.passed, result.engine) == (False, "transformers")
    assert result.reason == "/m is not a model folder; point the deployment at a model"
    assert result.load_s is not None


# -- rendering (provision/report/smoke.py) ---------------------------------------------------


def test_junit_has_one_testcase_per_deployment_and_survives_control_characters(tmp_path: Path) -> None:
    from provision.report.smoke import smoke_dict, write_junit

    results = [
        SmokeResult(
            "api", "openai", True, ttft=0.1, output_tokens=5, token_source="server", total_s=1.0, text="ok\x01 <b>"
        ),
        SmokeResult("local", "transformers", False, "401 Unauthorized: the API key was rejected", total_s=0.2),
    ]
    write_junit(results, tmp_path / "out" / "smoke.xml")
    root = ET.parse(tmp_path / "out" / "smoke.xml").getroot()
    suite = root.find("testsuite")
    assert suite is not None and (suite.get("tests"), suite.get("failures")) == ("2", "1")
    cases = suite.findall("testcase")
    assert [(c.get("classname"), c.get("name")) for c in cases] == [
        ("smoke.openai", "api"),
        ("smoke.transformers", "local"),
    ]
    assert cases[0].find("failure") is None
    assert cases[0].findtext("system-out") == "ok <b>"
    failure = cases[1].find("failure")
    assert failure is not None and failure.get("message") == "401 Unauthorized: the API key was rejected"
    document = smoke_dict(results)
    assert (document["passed"], document["failed"]) == (False, 1)
    assert document["results"][0]["token_source"] == "server"
