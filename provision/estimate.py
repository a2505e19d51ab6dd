"""Memory estimates for serving a model: parameters, weights, KV cache, and the longest context.

Pure functions over a model's ``config.json`` (a dict), the real size of its weight files when
known, a GGUF header, and an engine's arguments. Sizes are bytes; GiB = 2**30.

Parameters, for a decoder-only transformer (Llama, Qwen2, Qwen3, Mistral, ...)::

    d      = head_dim, or hidden_size / num_attention_heads when the config has none
    n_q    = num_attention_heads;  n_kv = num_key_value_heads (grouped-query attention), else n_q
    attn   = h·(n_q·d) + 2·h·(n_kv·d) + (n_q·d)·h          q, k, v, o projections
           + n_q·d + 2·n_kv·d      when q/k/v have biases (Qwen2 always; others: attention_bias)
           + 2·d                   Qwen3's q/k RMSNorm
    mlp    = 3·h·I                 gated MLP: gate, up, down (no biases unless mlp_bias)
    params = V·h + L·(attn + mlp + 2·h) + h + (V·h unless tie_word_embeddings)

(``text_config`` is read first when the config nests one.) Encoder-only models (BERT-like) are
counted by :mod:`provision.encoder` and have no KV cache. Mixture-of-experts and
multi-head-latent-attention configs are not modelled: their count is unknown, and the real file
sizes decide.

Weights::

    weights = safetensors bytes × dtype_bytes(target) / dtype_bytes(stored)   sizes known
            = params × dtype_bytes(target)                                     otherwise
    dtype_bytes: float32 4, float16/bfloat16 2, fp8/int8 1, int4 0.5;
    "auto" = the config's torch_dtype (or dtype). A pre-quantized checkpoint
    (quantization_config) is taken at its file size, or params × bits / 8.

KV cache (exact for this formula)::

    kv_per_token = 2 (K and V) × L × n_kv × d × kv_dtype_bytes
    kv           = kv_per_token × context_len × max_num_seqs (default 1)

vLLM (one container, tensor-parallel over tp GPUs; every figure is per GPU, times tp)::

    usable   = gpu_memory_utilization (0.9) × VRAM of the smallest GPU used × tp
    weights  = tp × (sharded / tp + replicated) × bytes per parameter
    overhead = tp × (1 GiB + 8192 × (4·h + 2·I / tp) × 2)
    needed   = weights + kv(max_model_len) + overhead
    max_len  = floor((usable − weights − overhead) / kv_per_token), rounded down to a multiple of 16

Tensor parallelism as vLLM 0.32 does it (``vllm/model_executor/layers/linear.py``,
``vllm/config/model.py``): the attention heads must divide by tp; q/o projections, the MLP, the
embeddings and the LM head are split tp ways; each GPU holds ``max(1, n_kv // tp)`` KV heads,
both their K/V projections and their KV cache (replicated when tp exceeds n_kv); norms are
whole on every GPU. (The vocabulary is padded to a multiple of 64 per GPU: ignored, < 0.1%.)

The overhead is a chosen, coarse figure: 1 GiB per GPU for the CUDA context, NCCL and other
non-torch memory and CUDA graphs, plus the activation peak of vLLM's profiling forward pass over
``max_num_batched_tokens`` (8192) tokens in 2-byte activations: the MLP's gate/up output
(2·I/tp) and a few hidden-size buffers (4·h). vLLM refuses to start unless one sequence of
``max_model_len`` tokens fits in the KV cache, hence max_num_seqs = 1 for the fit. When tp
exceeds n_kv, vLLM replicates KV heads: each GPU holds max(1, n_kv / tp) of them.

vLLM on the CPU (``gpus: 0``, a vllm-cpu image; vLLM 0.32's ``vllm/platforms/cpu.py`` and
``vllm/v1/worker/cpu_worker.py``): the KV cache is ``VLLM_CPU_KVCACHE_SPACE`` GiB when the
container's environment sets it (an integer; empty = unset). Unset, vLLM reserves
``gpu_memory_utilization`` (0.92 in 0.32) × total RAM for itself and gives the KV cache what
the process does not already use, and refuses to start when that reservation exceeds the
available RAM. The KV block is 128 tokens on the CPU::

    needed = weights + kv_space + 3 GiB      (the API server and engine processes' runtime)
           = 0.92 × total RAM                 VLLM_CPU_KVCACHE_SPACE unset

transformers: ``needed = weights × 1.2`` (KV cache, activations and allocator slack), on the
GPU(s) when present, else in RAM.

Ollama (GGUF)::

    kv_per_token = L × n_kv × (key_length + value_length) × 2     f16 cache, from the header
    needed       = file size + kv_per_token × num_ctx

``num_ctx``: the deployment's ``parameters.num_ctx``, else Ollama's default as documented in
its context-length guide (VRAM under 24 GiB: 4096; under 48 GiB: 32768; else 262144), never
above the model's own context length. Releases before that guide used 4096, and before 0.6
2048: pass ``num_ctx`` to pin it.

One module past 400 lines on purpose: the formulas above and the functions below are one
derivation (vLLM's and Ollama's figures read the same :class:`ModelShape` and dtype sizes), and
keeping them together keeps the notation next to its code.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from .encoder import encoder_parameter_count, is_encoder

GIB = 2**30
BLOCK_SIZE = 16  # vLLM's KV-cache block size in tokens
TRANSFORMERS_OVERHEAD = 0.2
VLLM_GPU_OVERHEAD = GIB
VLLM_BATCHED_TOKENS = 8192
VLLM_DEFAULT_UTILIZATION = 0.9  # the default image's vLLM (0.10); 0.32 has 0.92
VLLM_CPU_UTILIZATION = 0.92  # vLLM 0.32's CacheConfig.gpu_memory_utilization default
VLLM_CPU_OVERHEAD = 3 * GIB  # a chosen figure: two Python processes with torch and vLLM loaded
VLLM_CPU_BLOCK_SIZE = 128
CPU_KV_ENV = "VLLM_CPU_KVCACHE_SPACE"
OLLAMA_KV_BYTES = 2  # f16 cache unless OLLAMA_KV_CACHE_TYPE says otherwise

DTYPE_BYTES: dict[str, float] = {
    "float32": 4,
    "fp32": 4,
    "float": 4,
    "float16": 2,
    "fp16": 2,
    "half": 2,
    "bfloat16": 2,
    "bf16": 2,
    "fp8": 1,
    "fp8_e4m3": 1,
    "fp8_e5m2": 1,
    "float8_e4m3fn": 1,
    "float8_e5m2": 1,
    "int8": 1,
    "int4": 0.5,
}


def dtype_bytes(name: str | None) -> float | None:
    """Bytes per element of a dtype name (``torch.bfloat16`` and ``bfloat16`` alike), or None."""
    if not name:
        return None
    return DTYPE_BYTES.get(str(name).lower().removeprefix("torch."))


# -- the model's shape ---------------------------------------------------------------------


def text_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The language model's settings: a nested ``text_config`` over the top level."""
    nested = config.get("text_config")
    return {**config, **nested} if isinstance(nested, Mapping) else dict(config)


def config_dtype(config: Mapping[str, Any]) -> str | None:
    """The dtype the checkpoint is stored in (``torch_dtype``; transformers 5 writes ``dtype``)."""
    merged = text_config(config)
    value = merged.get("torch_dtype") or merged.get("dtype")
    return str(value).removeprefix("torch.") if value else None


@dataclass(frozen=True)
class ModelShape:
    hidden_size: int
    intermediate_size: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab_size: int
    tied_embeddings: bool
    qkv_bias: bool
    qk_norm: bool
    mlp_bias: bool
    max_position_embeddings: int | None


_MOE_KEYS = ("num_experts", "num_local_experts", "n_routed_experts", "kv_lora_rank")


def model_shape(config: Mapping[str, Any]) -> ModelShape | None:
    """The dimensions that size a dense decoder, or None when the config is not one."""
    c = text_config(config)
    if any(c.get(key) for key in _MOE_KEYS) or is_encoder(c):  # encoders: provision.encoder
        return None
    try:
        hidden, heads = int(c["hidden_size"]), int(c["num_attention_heads"])
        model_type = str(c.get("model_type", ""))
        return ModelShape(
            hidden_size=hidden,
            intermediate_size=int(c["intermediate_size"]),
            layers=int(c["num_hidden_layers"]),
            heads=heads,
            kv_heads=int(c.get("num_key_value_heads") or heads),
            head_dim=int(c.get("head_dim") or hidden // heads),
            vocab_size=int(c["vocab_size"]),
            # transformers' own default is True, but Llama/Qwen/Mistral configs default to False
            # and write the key whenever it is True.
            tied_embeddings=bool(c.get("tie_word_embeddings", False)),
            qkv_bias=bool(c.get("attention_bias", model_type.startswith("qwen2"))),
            qk_norm=model_type.startswith("qwen3"),
            mlp_bias=bool(c.get("mlp_bias", False)),
            max_position_embeddings=int(c["max_position_embeddings"]) if c.get("max_position_embeddings") else None,
        )
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return None


def parameter_count(shape: ModelShape) -> int:
    h, d, inter = shape.hidden_size, shape.head_dim, shape.intermediate_size
    q, kv = shape.heads * d, shape.kv_heads * d
    attn = h * q + 2 * h * kv + q * h
    if shape.qkv_bias:
        attn += q + 2 * kv
    if shape.qk_norm:
        attn += 2 * d
    mlp = 3 * h * inter + (2 * inter + h if shape.mlp_bias else 0)
    per_layer = attn + mlp + 2 * h
    embeddings = shape.vocab_size * h
    lm_head = 0 if shape.tied_embeddings else shape.vocab_size * h
    return embeddings + shape.layers * per_layer + h + lm_head


# -- weights and KV cache ------------------------------------------------------------------


def resolve_dtype(requested: str | None, config: Mapping[str, Any]) -> str | None:
    """The dtype a deployment loads at: its own, or for ``auto``/unset the checkpoint's."""
    if requested and requested != "auto":
        return requested
    return config_dtype(config)


def weights_bytes(config: Mapping[str, Any], dtype: str | None, *, stored_bytes: int | None = None) -> int | None:
    """Bytes of the weights at ``dtype``; prefers the real file size (``stored_bytes``)."""
    quantization = text_config(config).get("quantization_config")
    if isinstance(quantization, Mapping):
        if stored_bytes is not None:
            return stored_bytes  # already packed; --dtype only sets the activations' precision
        bits = quantization.get("bits") or quantization.get("weight_bits")
        shape = model_shape(config)
        return int(parameter_count(shape) * bits / 8) if shape and bits else None
    target = dtype_bytes(resolve_dtype(dtype, config))
    if target is None:
        return None
    if stored_bytes is not None:
        stored = dtype_bytes(config_dtype(config))
        return int(stored_bytes * target / stored) if stored else None
    shape = model_shape(config)
    params = parameter_count(shape) if shape else encoder_parameter_count(text_config(config))
    return int(params * target) if params else None


def kv_heads_per_gpu(shape: ModelShape, tp: int = 1) -> int:
    """KV heads each GPU holds: split across tp GPUs, replicated when tp exceeds them."""
    return max(1, shape.kv_heads // tp)


def weights_on_gpus(shape: ModelShape | None, weights: int, tp: int = 1) -> int:
    """Weight bytes summed over ``tp`` GPUs: the split parts once, the replicated ones tp times."""
    if tp == 1 or shape is None:
        return weights
    h, d, layers = shape.hidden_size, shape.head_dim, shape.layers
    norms = layers * (2 * h + (2 * d if shape.qk_norm else 0)) + h
    kv_proj = layers * 2 * (h + (1 if shape.qkv_bias else 0)) * d  # one KV head's K and V projections
    total = parameter_count(shape)
    split = total - norms - kv_proj * shape.kv_heads
    per_gpu = split / tp + norms + kv_proj * kv_heads_per_gpu(shape, tp)
    return int(weights * per_gpu * tp / total)


def kv_bytes_per_token(shape: ModelShape, kv_dtype_bytes: float, *, tp: int = 1) -> int:
    """KV-cache bytes one token takes, summed over the ``tp`` GPUs."""
    return int(2 * shape.layers * kv_heads_per_gpu(shape, tp) * tp * shape.head_dim * kv_dtype_bytes)


# -- vLLM ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class VllmArgs:
    """The serving arguments that size memory, from a deployment's ``args``."""

    max_model_len: int | None = None
    gpu_memory_utilization: float = VLLM_DEFAULT_UTILIZATION
    tensor_parallel_size: int = 1
    dtype: str = "auto"
    kv_cache_dtype: str = "auto"
    max_num_batched_tokens: int = VLLM_BATCHED_TOKENS
    given: frozenset[str] = frozenset()  # the fields the args set (the rest are defaults)


_VLLM_FLAGS = {
    "--max-model-len": "max_model_len",
    "--gpu-memory-utilization": "gpu_memory_utilization",
    "--tensor-parallel-size": "tensor_parallel_size",
    "-tp": "tensor_parallel_size",
    "--dtype": "dtype",
    "--kv-cache-dtype": "kv_cache_dtype",
    "--max-num-batched-tokens": "max_num_batched_tokens",
}


def _token_count(text: str) -> int:
    """vLLM's lengths: ``32768``, ``32k`` (x1000) or ``32K`` (x1024), ``1m``/``1M`` likewise."""
    multiplier = {"k": 1000, "K": 1024, "m": 1000**2, "M": 1024**2}.get(text[-1:], 1)
    number = text[:-1] if multiplier != 1 else text
    return int(float(number) * multiplier)


def parse_vllm_args(args: Sequence[str]) -> VllmArgs:
    """Read the sizing flags (``--flag value`` or ``--flag=value``); others are ignored.

    Raises ValueError on a value that is not a number.
    """
    found: dict[str, Any] = {}
    items = list(args)
    for index, item in enumerate(items):
        flag, eq, value = item.partition("=")
        field = _VLLM_FLAGS.get(flag)
        if field is None:
            continue
        if not eq:
            if index + 1 >= len(items):
                continue
            value = items[index + 1]
        found[field] = value
    parsed: dict[str, Any] = {}
    for field, value in found.items():
        if field in ("max_model_len", "max_num_batched_tokens"):
            parsed[field] = _token_count(value)
        elif field == "tensor_parallel_size":
            parsed[field] = int(value)
        elif field == "gpu_memory_utilization":
            parsed[field] = float(value)
        else:
            parsed[field] = value
    return VllmArgs(**parsed, given=frozenset(parsed))


def vllm_dtype(requested: str, config: Mapping[str, Any]) -> str | None:
    """vLLM's ``--dtype auto`` serves a float32 checkpoint in half precision."""
    dtype = resolve_dtype(requested, config)
    if requested == "auto" and dtype_bytes(dtype) == 4:
        return "bfloat16"
    return dtype


def vllm_overhead(shape: ModelShape | None, *, tp: int = 1, batched_tokens: int = VLLM_BATCHED_TOKENS) -> int:
    """Per-deployment runtime overhead, summed over ``tp`` GPUs (see the module docstring)."""
    if shape is None:
        return tp * VLLM_GPU_OVERHEAD
    activations = batched_tokens * (4 * shape.hidden_size + 2 * shape.intermediate_size // tp) * 2
    return tp * (VLLM_GPU_OVERHEAD + activations)


def vllm_max_context(
    usable: int, weights: int, overhead: int, kv_per_token: int, *, block_size: int = BLOCK_SIZE
) -> int:
    """The longest ``--max-model-len`` whose KV cache fits, a multiple of the block size (0: none)."""
    room = usable - weights - overhead
    if room <= 0 or kv_per_token <= 0:
        return 0
    tokens = room // kv_per_token
    return tokens - tokens % block_size


def cpu_kv_cache_space(env: Mapping[str, str]) -> int | None:
    """Bytes of KV cache a CPU vLLM gets from ``VLLM_CPU_KVCACHE_SPACE`` (GiB), None when unset.

    Raises ValueError on a value vLLM's ``int()`` would refuse.
    """
    value = env.get(CPU_KV_ENV, "")
    if value == "":
        return None
    return int(value) * GIB


# -- GGUF (Ollama) -------------------------------------------------------------------------


@dataclass(frozen=True)
class GgufInfo:
    file_bytes: int
    architecture: str | None = None
    layers: int | None = None
    kv_heads: int | None = None
    key_length: int | None = None
    value_length: int | None = None
    context_length: int | None = None
    parameters: int | None = None  # from the tensors' shapes, when the file was read

    @property
    def kv_bytes_per_token(self) -> int | None:
        if not (self.layers and self.kv_heads and self.key_length and self.value_length):
            return None
        return self.layers * self.kv_heads * (self.key_length + self.value_length) * OLLAMA_KV_BYTES


def gguf_info_from_metadata(metadata: Mapping[str, Any], file_bytes: int) -> GgufInfo:
    """From GGUF key/values: a file's header, or the ``model_info`` of Ollama's ``/api/show``."""
    arch = metadata.get("general.architecture")

    def number(key: str) -> int | None:
        value = metadata.get(f"{arch}.{key}")
        if isinstance(value, (list, tuple)):  # per-layer values (e.g. head_count_kv): the largest
            value = max(value, default=None)
        return int(value) if value else None

    heads, embedding = number("attention.head_count"), number("embedding_length")
    default_head = embedding // heads if heads and embedding else None
    return GgufInfo(
        file_bytes=file_bytes,
        architecture=str(arch) if arch else None,
        layers=number("block_count"),
        kv_heads=number("attention.head_count_kv") or heads,
        key_length=number("attention.key_length") or default_head,
        value_length=number("attention.value_length") or default_head,
        context_length=number("context_length"),
    )


def read_gguf(path: str | os.PathLike[str]) -> GgufInfo:
    """Read a GGUF file's header (memory-mapped: the tensors are not read)."""
    from gguf import GGUFReader

    reader = GGUFReader(path)
    metadata = {name: field.contents() for name, field in reader.fields.items() if not name.startswith("tokenizer.")}
    info = gguf_info_from_metadata(metadata, os.path.getsize(path))
    return replace(info, parameters=sum(int(t.n_elements) for t in reader.tensors) or None)


def ollama_default_context(total_vram: int, model_context: int | None) -> int:
    """Ollama's default ``num_ctx`` for this much VRAM (see the module docstring)."""
    if total_vram < 24 * GIB:
        default = 4096
    elif total_vram < 48 * GIB:
        default = 32768
    else:
        default = 262144
    return min(default, model_context) if model_context else default
