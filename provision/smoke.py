"""The smoke test: one streamed chat per deployment, timed, and judged pass or fail.

Metrics are ``vllm bench serve``'s (vllm/benchmarks/lib/endpoint_request_func.py and
serve.py of vLLM 0.32.0), for one request; a *choice chunk* is one that carries a choice
(text or a finish reason), not the trailing usage chunk:

    send ── TTFT ──▶ first choice chunk ── ITL ──▶ chunk ── ITL ──▶ finish chunk ──▶ usage ──▶ end
    │◀──────────────────────────── latency ──────────────────────────▶│
    │◀──────────────────────────────── total_s ──────────────────────────────────────────▶│

- send: taken just before the request is written, on a warmed client (``EngineClient.warm``,
  in ``load_s``): vLLM's benchmark times requests on a keep-alive connection after an initial
  test request, so a cold client's costs (connection, lazy imports, the first parse) would
  otherwise sit in TTFT alone.
- TTFT: the first choice chunk minus the send time. vLLM's benchmark stops at its role
  chunk, which vLLM's server sends in the same step as the first token's chunk; provision's
  clients do not surface role chunks, so the first text (or finish) chunk stands for it
  (docs/protocols.md says why).
- ITL: the gaps between consecutive choice chunks after the first, the finish chunk
  included (per chunk: a chunk carrying several tokens is one gap).
- latency: send to the last choice chunk. When generation ends with EOS ("stop") vLLM sends
  the finish reason in a chunk of its own, one decode step after the last text, and counts
  EOS in ``completion_tokens``: ending latency at the last text would bias TPOT low.
- TPOT: (latency - TTFT) / (output_tokens - 1).
- tokens_per_s: the decode rate, (output_tokens - 1) / (latency - TTFT), i.e. 1 / TPOT, as
  Ollama's "eval rate": the first token is paid by TTFT, so it is not in the rate.
- output tokens: the engine's own count when it gives one (a usage chunk, Ollama's
  eval_count, the ids transformers' generate returned), else the model's tokenizer on the
  text (``client.count_tokens``), else the number of content chunks; ``token_source`` says
  which ("server", "tokenizer", "chunks").

Failures are results, not exceptions: a refused connection, a 401, an unknown model, a
timeout, an empty answer, an error mid-stream, a folder that is not a model each give
``passed=False`` and a one-line ``reason``. ``settings.timeout`` bounds the stream even if
the client hangs: the stream is consumed in a daemon thread and waited on with a deadline.
"""

from __future__ import annotations

import contextlib
import itertools
import queue
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from statistics import mean, median

from .client.base import ChatEvent, EngineClient
from .errors import ProvisionError
from .manifest import SmokeTestSettings

Clock = Callable[[], float]
OnText = Callable[[str, str], None]  # (deployment, new text), called as text arrives
_END = object()  # the stream finished normally


@dataclass(frozen=True)
class SmokeResult:
    """One deployment's smoke test. Times are seconds; a metric is None when not measurable."""

    deployment: str
    engine: str
    passed: bool
    reason: str | None = None  # why it failed, one line
    ttft: float | None = None
    itl_mean: float | None = None
    itl_median: float | None = None
    itl_p99: float | None = None
    tpot: float | None = None
    output_tokens: int = 0
    token_source: str = "chunks"
    tokens_per_s: float | None = None
    total_s: float | None = None  # send to end of stream
    finish_reason: str | None = None
    text: str = ""
    load_s: float | None = None  # making and warming the client: loading the model for transformers
    # task: embed (see smoke_embed): what the batch of probes gave
    task: str = "chat"
    dimension: int | None = None
    norms: tuple[float, ...] = ()
    cos_positive: float | None = None  # the lowest cos(query, paraphrase) over the probes
    cos_negative: float | None = None  # the highest cos(query, unrelated text)
    texts_per_s: float | None = None
    input_tokens: int | None = None
    truncated: tuple[int, ...] = ()  # inputs the engine cut to its maximum length


@dataclass(frozen=True)
class SmokeJob:
    """What ``run_many`` needs for one deployment. ``connect`` makes the client (may raise)."""

    name: str
    engine: str
    connect: Callable[[], EngineClient]
    settings: SmokeTestSettings
    expect: str | None = None
    max_ttft: float | None = None
    min_tokens_per_s: float | None = None
    task: str = "chat"
    expect_dimension: int | None = None


@dataclass(frozen=True)
class StreamMetrics:
    ttft: float | None
    itl: tuple[float, ...]
    latency: float | None  # send to the last choice chunk (the finish chunk)
    total_s: float
    output_tokens: int
    token_source: str
    tpot: float | None
    tokens_per_s: float | None
    finish_reason: str | None
    text: str


# -- pure metric math ----------------------------------------------------------------------


def ttft_and_itl(send: float, content_times: Sequence[float]) -> tuple[float | None, tuple[float, ...]]:
    """TTFT and the inter-chunk gaps, from the arrival times of the choice chunks."""
    if not content_times:
        return None, ()
    gaps = tuple(later - earlier for earlier, later in itertools.pairwise(content_times))
    return content_times[0] - send, gaps


def time_per_output_token(latency: float | None, ttft: float | None, output_tokens: int) -> float | None:
    if latency is None or ttft is None or output_tokens < 2 or latency <= ttft:
        return None  # one token, or all text in one chunk: no decode time was observed
    return (latency - ttft) / (output_tokens - 1)


def decode_rate(tpot: float | None) -> float | None:
    """Tokens per second after the first token; None when TPOT is unknown or zero."""
    return 1.0 / tpot if tpot else None


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated percentile (numpy's default), q in [0, 100]."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def output_token_count(
    events: Sequence[ChatEvent], text: str, count_tokens: Callable[[str], int | None]
) -> tuple[int, str]:
    """(count, source): the server's last reported count, else the tokenizer's, else chunks."""
    reported = [e.output_tokens for e in events if e.output_tokens is not None]
    if reported:
        return reported[-1], "server"
    counted = count_tokens(text) if text else None
    if counted is not None:
        return counted, "tokenizer"
    return sum(1 for e in events if e.text), "chunks"


def measure(
    send: float,
    timed: Sequence[tuple[float, ChatEvent]],
    end: float,
    count_tokens: Callable[[str], int | None],
) -> StreamMetrics:
    """All metrics of one stream from its send time, timestamped events and end time."""
    events = [event for _, event in timed]
    choice_times = [t for t, event in timed if event.text or event.finish_reason]  # not usage chunks
    text = "".join(event.text for event in events)
    ttft, itl = ttft_and_itl(send, choice_times)
    latency = choice_times[-1] - send if choice_times else None
    tokens, source = output_token_count(events, text, count_tokens)
    tpot = time_per_output_token(latency, ttft, tokens)
    finish = next((e.finish_reason for e in reversed(events) if e.finish_reason), None)
    return StreamMetrics(ttft, itl, latency, end - send, tokens, source, tpot, decode_rate(tpot), finish, text)


def judge(
    metrics: StreamMetrics,
    *,
    expect: str | None,
    max_ttft: float | None,
    min_tokens_per_s: float | None,
) -> str | None:
    """Why a completed stream fails the test, or None when it passes."""
    if not metrics.text.strip():
        return f"empty answer (finish reason: {metrics.finish_reason or 'none'})"
    if expect is not None and not re.search(expect, metrics.text):
        return f"answer does not match expect /{expect}/: {_preview(metrics.text)}"
    if max_ttft is not None and metrics.ttft is not None and metrics.ttft > max_ttft:
        return f"TTFT {metrics.ttft:.3f} s is over max_ttft {max_ttft:g} s"
    if min_tokens_per_s is not None:
        if metrics.tokens_per_s is None:
            return f"too few tokens ({metrics.output_tokens}) to measure tokens/s against min_tokens_per_s"
        if metrics.tokens_per_s < min_tokens_per_s:
            return f"{metrics.tokens_per_s:.1f} tokens/s is under min_tokens_per_s {min_tokens_per_s:g}"
    return None


def failure_reason(exc: BaseException) -> str:
    """One line a user understands: a provision error's message and hint, else the exception."""
    if isinstance(exc, ProvisionError):
        line = f"{str(exc).rstrip('.')}; {exc.hint}" if exc.hint else str(exc)
    else:
        line = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    first = line.strip().splitlines()[0] if line.strip() else type(exc).__name__
    return first if len(first) <= 300 else first[:297] + "..."


def _preview(text: str, width: int = 60) -> str:
    flat = " ".join(text.split())
    return repr(flat if len(flat) <= width else flat[: width - 3] + "...")


# -- running -------------------------------------------------------------------------------


def _pump(stream: Iterator[ChatEvent], clock: Clock, out: queue.Queue[tuple[float, object]]) -> None:
    """Worker: timestamp each event as it arrives; an exception or the end is the last item."""
    try:
        for event in stream:
            out.put((clock(), event))
    except BaseException as exc:  # noqa: BLE001 - handed to the caller, who reports it
        out.put((clock(), exc))
    else:
        out.put((clock(), _END))


def run_one(
    name: str,
    client: EngineClient,
    settings: SmokeTestSettings,
    *,
    engine: str = "",
    expect: str | None = None,
    max_ttft: float | None = None,
    min_tokens_per_s: float | None = None,
    on_text: OnText | None = None,
    clock: Clock = time.perf_counter,
) -> SmokeResult:
    """Stream one chat through ``client`` and judge it. Never raises for a deployment failure.

    ``clock`` times the metrics (inject a fake one in tests); the deadline uses the real
    monotonic clock. On a timeout the worker thread is abandoned (it is a daemon) and the
    client is left for the caller to ``close()``, which ends most hung connections.
    """
    events: queue.Queue[tuple[float, object]] = queue.Queue()
    deadline = time.monotonic() + settings.timeout
    send = clock()  # the worker writes the request next: a thread start (~0.1 ms) later
    try:
        stream = iter(client.stream_chat(settings))
    except Exception as exc:  # noqa: BLE001 - a client that fails before streaming
        return SmokeResult(name, engine, False, failure_reason(exc), total_s=clock() - send)
    worker = threading.Thread(target=_pump, args=(stream, clock, events), name=f"smoke-{name}", daemon=True)
    worker.start()

    timed: list[tuple[float, ChatEvent]] = []
    error: str | None = None
    end = send
    while True:
        try:
            end, item = events.get(timeout=max(deadline - time.monotonic(), 0))
        except queue.Empty:
            end = clock()
            got = f"after {sum(1 for _, e in timed if e.text)} chunks" if timed else "before the first token"
            error = f"timed out after {settings.timeout:g} s ({got}); raise smoke_test.timeout if the model is slow"
            break
        if item is _END:
            break
        if isinstance(item, BaseException):
            error = failure_reason(item)
            break
        assert isinstance(item, ChatEvent)
        timed.append((end, item))
        if item.text and on_text is not None:
            on_text(name, item.text)

    metrics = measure(send, timed, end, _safe_counter(client))
    if error is None:
        error = judge(metrics, expect=expect, max_ttft=max_ttft, min_tokens_per_s=min_tokens_per_s)
    return SmokeResult(
        deployment=name,
        engine=engine,
        passed=error is None,
        reason=error,
        ttft=metrics.ttft,
        itl_mean=mean(metrics.itl) if metrics.itl else None,
        itl_median=median(metrics.itl) if metrics.itl else None,
        itl_p99=percentile(metrics.itl, 99),
        tpot=metrics.tpot,
        output_tokens=metrics.output_tokens,
        token_source=metrics.token_source,
        tokens_per_s=metrics.tokens_per_s,
        total_s=metrics.total_s,
        finish_reason=metrics.finish_reason,
        text=metrics.text,
    )


def _safe_counter(client: EngineClient) -> Callable[[str], int | None]:
    """``client.count_tokens`` that falls back to chunks instead of failing the test."""

    def count(text: str) -> int | None:
        try:
            return client.count_tokens(text)
        except Exception:  # noqa: BLE001 - a tokenizer problem is not a deployment failure
            return None

    return count


def run_job(job: SmokeJob, *, on_text: OnText | None = None, clock: Clock = time.perf_counter) -> SmokeResult:
    """Make and warm the client (timed as ``load_s``), run the chat, close the client."""
    started = clock()
    try:
        client = job.connect()
    except Exception as exc:  # noqa: BLE001 - e.g. a folder that is not a model
        return SmokeResult(job.name, job.engine, False, failure_reason(exc), load_s=clock() - started)
    # The client's own first-use costs, outside TTFT; best effort: the request reports what is wrong.
    with contextlib.suppress(Exception):
        client.warm()
    load_s = clock() - started
    try:
        if job.task == "embed":
            return replace(run_embed(job, client, clock=clock), load_s=load_s)
        result = run_one(
            job.name,
            client,
            job.settings,
            engine=job.engine,
            expect=job.expect,
            max_ttft=job.max_ttft,
            min_tokens_per_s=job.min_tokens_per_s,
            on_text=on_text,
            clock=clock,
        )
    finally:
        with contextlib.suppress(Exception):  # closing must not hide the result
            client.close()
    return replace(result, load_s=load_s)


def run_embed(job: SmokeJob, client: EngineClient, *, clock: Clock = time.perf_counter) -> SmokeResult:
    """Embed the probes in one batch and judge them (``smoke_embed``). Never raises for a deployment failure."""
    from .smoke_embed import DEFAULT_PROBES, judge_embeddings, l2_norm, measure_embed, pair_cosines

    probes = (job.settings.embed,) if job.settings.embed is not None else DEFAULT_PROBES
    try:
        embedded, seconds = measure_embed(client, probes, clock)
    except Exception as exc:  # noqa: BLE001 - reported as the result
        return SmokeResult(job.name, job.engine, False, failure_reason(exc), task="embed")
    reason = judge_embeddings(probes, embedded, job.expect_dimension)
    near, far = pair_cosines(probes, embedded.vectors)
    return SmokeResult(
        deployment=job.name,
        engine=job.engine,
        passed=reason is None,
        reason=reason,
        total_s=seconds,
        task="embed",
        dimension=len(embedded.vectors[0]) if embedded.vectors else None,
        norms=tuple(l2_norm(v) for v in embedded.vectors),
        cos_positive=near,
        cos_negative=far,
        texts_per_s=len(embedded.vectors) / seconds if seconds > 0 else None,
        input_tokens=embedded.input_tokens,
        truncated=embedded.truncated,
    )


def run_many(jobs: Sequence[SmokeJob], *, concurrency: int = 4, on_text: OnText | None = None) -> list[SmokeResult]:
    """Run jobs at most ``concurrency`` at a time; results in the order of ``jobs``."""
    if not jobs:
        return []
    with ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(jobs))), thread_name_prefix="smoke") as pool:
        return list(pool.map(lambda job: run_job(job, on_text=on_text), jobs))
