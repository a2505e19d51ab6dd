"""The smoke test of a ``task: embed`` deployment: one batch of probes, checked for sanity.

A probe is a query, a paraphrase of it (``positive``) and an unrelated text (``negative``);
all probes go in one batch (``smoke_test.embed`` sets one; the default is an English and a
Chinese probe). Reported: the dimension, the L2 norms, the worst pair (the lowest
cos(query, positive) and the highest cos(query, negative) over the probes), the latency of
the batch, texts/s, and the input tokens when the engine counts them.

It passes when there is one vector per input, all of one dimension, equal to
``expect_dimension`` (else the model's config, when the engine knows it), every norm is
finite and non-zero, and in every probe the paraphrase is closer to the query than the
unrelated text.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

from .client.base import Embeddings, EngineClient
from .manifest import EmbedProbe

DEFAULT_PROBES = (
    EmbedProbe(
        query="How do I reset my password?",
        positive="What are the steps to change a forgotten password?",
        negative="The recipe calls for two cups of flour.",
    ),
    EmbedProbe(query="今天北京的天气怎么样？", positive="北京今天天气如何？", negative="这道菜需要两杯面粉。"),
)


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    scale = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return dot / scale if scale else 0.0


def l2_norm(vector: Sequence[float]) -> float:
    return math.sqrt(sum(x * x for x in vector))


def probe_texts(probes: Sequence[EmbedProbe]) -> list[str]:
    return [text for p in probes for text in (p.query, p.positive, p.negative)]


def judge_embeddings(probes: Sequence[EmbedProbe], result: Embeddings, expect_dimension: int | None) -> str | None:
    """Why this batch fails the embedding proof, or None when it passes (pure)."""
    vectors = result.vectors
    wanted = 3 * len(probes)
    if len(vectors) != wanted:
        return f"the server returned {len(vectors)} vectors for {wanted} inputs"
    dimensions = sorted({len(v) for v in vectors})
    if len(dimensions) != 1 or dimensions[0] == 0:
        return f"vectors of {', '.join(map(str, dimensions))} dimensions in one batch"
    expected = expect_dimension or result.model_dimension
    if expected is not None and dimensions[0] != expected:
        told = "expect_dimension" if expect_dimension else "the model's config"
        return f"dimension {dimensions[0]}, but {told} says {expected}"
    norms = [l2_norm(v) for v in vectors]
    if not all(math.isfinite(n) and n > 0 for n in norms):
        return "a vector has a zero or non-finite norm"
    for index, probe in enumerate(probes):
        query, positive, negative = vectors[3 * index : 3 * index + 3]
        near, far = cosine(query, positive), cosine(query, negative)
        if near <= far:
            return (
                f"the paraphrase is not closer than the unrelated text for {probe.query!r}: cos {near:.3f} vs {far:.3f}"
            )
    return None


def pair_cosines(probes: Sequence[EmbedProbe], vectors: Sequence[Sequence[float]]) -> tuple[float | None, float | None]:
    """The worst pair over the probes: (lowest cos(query, positive), highest cos(query, negative))."""
    if len(vectors) != 3 * len(probes) or len({len(v) for v in vectors}) != 1:
        return None, None
    near = [cosine(vectors[3 * i], vectors[3 * i + 1]) for i in range(len(probes))]
    far = [cosine(vectors[3 * i], vectors[3 * i + 2]) for i in range(len(probes))]
    return min(near), max(far)


def measure_embed(
    client: EngineClient, probes: Sequence[EmbedProbe], clock: Callable[[], float] = time.perf_counter
) -> tuple[Embeddings, float]:
    """Embed the probes in one batch; (the result, seconds it took)."""
    started = clock()
    result = client.embed(probe_texts(probes))
    return result, clock() - started
