"""Encoder-only models (BERT-like embedding and reranking models): weights and activations, no KV cache.

Recognised by the config alone: ``model_type`` bert, roberta, xlm-roberta, camembert, electra or
ernie, or an architecture named after one (``BertModel``, ``XLMRobertaModel``, ...). The config
is the language model's (``text_config`` merged over the top level)::

    embeddings = (V + max_position_embeddings + type_vocab_size) · h + 2·h      (+ LayerNorm)
    layer      = 4·(h·h + h) + (h·I + I) + (I·h + h) + 2·(2·h)                  q, k, v, o; MLP; 2 LayerNorms
    params     = embeddings + L · layer + (h·h + h)                              (+ the pooler)

That is bert-base-uncased's published 109,482,240 at h 768, I 3072, L 12, V 30522.

Activations, the peak of one forward pass over ``batch`` sequences of ``seq`` tokens (a chosen,
coarse figure: the hidden state and its q/k/v/o projections, the MLP's intermediate, and the
attention scores an eager implementation materialises)::

    activations = batch · (seq · (5·h + I) + heads · seq²) · dtype_bytes
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

ENCODER_TYPES = ("bert", "roberta", "xlm-roberta", "camembert", "electra", "ernie")
_ARCHITECTURE_PREFIXES = ("Bert", "Roberta", "XLMRoberta", "Camembert", "Electra", "Ernie")


def is_encoder(config: Mapping[str, Any]) -> bool:
    architectures = config.get("architectures")
    named = isinstance(architectures, list) and any(
        isinstance(a, str) and a.startswith(_ARCHITECTURE_PREFIXES) for a in architectures
    )
    return str(config.get("model_type", "")) in ENCODER_TYPES or named


def _sizes(config: Mapping[str, Any]) -> tuple[int, int, int, int, int, int, int] | None:
    try:
        return (
            int(config["hidden_size"]),
            int(config["intermediate_size"]),
            int(config["num_hidden_layers"]),
            int(config["num_attention_heads"]),
            int(config["vocab_size"]),
            int(config.get("max_position_embeddings") or 512),
            int(config.get("type_vocab_size") or 0),
        )
    except (KeyError, TypeError, ValueError):
        return None


def encoder_parameter_count(config: Mapping[str, Any]) -> int | None:
    sizes = _sizes(config)
    if sizes is None:
        return None
    h, inter, layers, _, vocab, positions, types = sizes
    embeddings = (vocab + positions + types) * h + 2 * h
    layer = 4 * (h * h + h) + (h * inter + inter) + (inter * h + h) + 4 * h
    return embeddings + layers * layer + h * h + h


def encoder_max_length(config: Mapping[str, Any]) -> int | None:
    sizes = _sizes(config)
    return sizes[5] if sizes else None


def encoder_activation_bytes(config: Mapping[str, Any], seq: int, dtype_bytes: float, *, batch: int = 1) -> int | None:
    sizes = _sizes(config)
    if sizes is None:
        return None
    h, inter, _, heads, *_ = sizes
    return int(batch * (seq * (5 * h + inter) + heads * seq * seq) * dtype_bytes)
