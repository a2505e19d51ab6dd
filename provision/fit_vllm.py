"""Will a vLLM deployment fit? On its GPUs (tensor-parallel), or in RAM for a CPU build (``gpus: 0``).

The estimate (weights, KV cache at the configured context, overhead) is made whenever the model's
config is known, whatever the GPUs: what stops the deployment here (no GPU, too few, busy ones)
is reported beside it, not instead of it. Formulas: :mod:`provision.estimate`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .encoder import encoder_max_length, is_encoder
from .estimate import (
    CPU_KV_ENV,
    VLLM_CPU_BLOCK_SIZE,
    VLLM_CPU_OVERHEAD,
    VLLM_CPU_UTILIZATION,
    ModelShape,
    VllmArgs,
    cpu_kv_cache_space,
    dtype_bytes,
    kv_bytes_per_token,
    model_shape,
    parse_vllm_args,
    text_config,
    vllm_dtype,
    vllm_max_context,
    vllm_overhead,
    weights_bytes,
    weights_on_gpus,
)
from .files import human_bytes
from .fit import DeploymentFit, MemoryEstimate, ModelInfo, judge, unknown
from .gpus import asks_for_gpus
from .hardware import Finding, Gpu, Inventory, Level


@dataclass(frozen=True)
class _Model:
    """What sizes the deployment, from its model and args, before any GPU is looked at."""

    shape: ModelShape | None
    weights: int
    context: int | None
    kv_bytes: float
    encoder: bool = False  # BERT-like: no KV cache (provision.encoder)


def _model(args: VllmArgs, info: ModelInfo) -> _Model | None:
    config = info.config or {}
    shape = model_shape(config) if info.config else None
    dtype = vllm_dtype(args.dtype, config) if info.config else None
    weights = weights_bytes(config, dtype, stored_bytes=info.weights_bytes) if info.config else info.weights_bytes
    if weights is None:
        return None
    kv_dtype = dtype if args.kv_cache_dtype == "auto" else args.kv_cache_dtype
    encoder = is_encoder(text_config(config))
    context = args.max_model_len or (
        shape.max_position_embeddings if shape else encoder_max_length(text_config(config)) if encoder else None
    )
    return _Model(shape, weights, context, dtype_bytes(kv_dtype) or 2, encoder)


def _numbers(model: _Model, tp: int, gpus: tuple[Gpu, ...], args: VllmArgs) -> MemoryEstimate:
    """The estimate over ``tp`` GPUs; ``gpus`` empty: none to judge against (available unknown)."""
    usable = int(args.gpu_memory_utilization * min(g.memory_total for g in gpus)) * tp if gpus else None
    weights = weights_on_gpus(model.shape, model.weights, tp)
    overhead = vllm_overhead(model.shape, tp=tp, batched_tokens=args.max_num_batched_tokens)
    where = "GPU " + ",".join(str(g.index) for g in gpus) if gpus else f"{tp} GPU{'s' if tp > 1 else ''}"
    if model.encoder:  # no KV cache: the overhead's activation peak is the rest
        longest = model.context if usable is not None and usable >= weights + overhead else 0
        return MemoryEstimate(
            where,
            weights + overhead,
            usable,
            weights,
            0,
            overhead,
            model.context,
            longest if usable is not None else None,
        )
    if model.shape is None or model.context is None:
        return MemoryEstimate(where, None, usable, weights, None, overhead, model.context)
    per_token = kv_bytes_per_token(model.shape, model.kv_bytes, tp=tp)
    kv = per_token * model.context
    longest = vllm_max_context(usable, weights, overhead, per_token) if usable is not None else None
    if longest is not None and model.shape.max_position_embeddings:
        longest = min(longest, model.shape.max_position_embeddings)  # vLLM refuses a longer --max-model-len
    return MemoryEstimate(where, weights + kv + overhead, usable, weights, kv, overhead, model.context, longest)


def _blockers(
    name: str, spec: Any, args: VllmArgs, inventory: Inventory, shape: ModelShape | None
) -> tuple[list[Finding], tuple[Gpu, ...], tuple[Gpu, ...]]:
    """What stops vLLM from starting on these GPUs (FAILs), the GPUs it gets, and those it uses."""

    def fail(message: str, remedy: str) -> Finding:
        return Finding(Level.FAIL, name, message, remedy)

    tp = args.tensor_parallel_size
    if shape is not None and shape.heads % tp:
        return (
            [
                fail(
                    f"--tensor-parallel-size {tp} does not divide the model's {shape.heads} attention heads",
                    "vLLM needs them to divide evenly: pick a tensor-parallel size that does",
                )
            ],
            (),
            (),
        )
    if not inventory.gpus:
        return (
            [
                fail(
                    "vLLM needs an NVIDIA GPU and none was found",
                    "run it on a machine with a GPU, plan for one with --gpu NAME, or use engine ollama "
                    "or transformers here",
                )
            ],
            (),
            (),
        )
    selected = _selected_gpus(spec.gpus, inventory.gpus)
    if isinstance(selected, str):
        return [fail(f"gpus: {selected}", "lower `gpus:` to what `provision check-hardware` lists")], (), ()
    if tp > len(selected):
        return (
            [
                fail(
                    f"--tensor-parallel-size {tp} needs {tp} GPUs; the container gets {len(selected)}",
                    f"give it {tp} GPUs with `gpus:` or lower --tensor-parallel-size",
                )
            ],
            selected,
            (),
        )
    used = selected[:tp]
    found = []
    short = [g for g in used if g.memory_free < args.gpu_memory_utilization * g.memory_total]
    if short:
        gpu = min(short, key=lambda g: g.memory_free / g.memory_total)
        share = int(gpu.memory_free / gpu.memory_total * 100) / 100
        found.append(
            fail(
                f"GPU {gpu.index} has {human_bytes(gpu.memory_free)} free of "
                f"{human_bytes(gpu.memory_total)}; vLLM wants {args.gpu_memory_utilization:g} of it at startup",
                f"stop what uses it (see `nvidia-smi`) or pass --gpu-memory-utilization {share:g}",
            )
        )
    old = [g for g in used if g.compute_capability is not None and g.compute_capability < (8, 0)]
    if old and args.dtype in ("bfloat16", "bf16"):
        capability = ".".join(map(str, old[0].compute_capability or ()))
        found.append(
            fail(
                f"--dtype bfloat16 needs compute capability 8.0; GPU {old[0].index} has {capability}",
                "pass --dtype float16 (vLLM refuses bfloat16 on this GPU)",
            )
        )
    return found, selected, used


def _selected_gpus(request: Any, gpus: tuple[Gpu, ...]) -> tuple[Gpu, ...] | str:
    """The GPUs a ``gpus:`` value gives the container, or why it cannot have them."""
    if request == "all":
        return gpus
    if isinstance(request, int):
        if request > len(gpus):
            return f"asks for {request} GPUs; {len(gpus)} available"
        return gpus[:request]
    by_index = {g.index: g for g in gpus}
    missing = [i for i in request if i not in by_index]
    if missing:
        return f"asks for GPU {', '.join(map(str, missing))}; {len(gpus)} available"
    return tuple(by_index[i] for i in request)


def fit_vllm(name: str, spec: Any, info: ModelInfo, inventory: Inventory) -> DeploymentFit:
    try:
        args = parse_vllm_args(spec.args)
    except ValueError as exc:
        return DeploymentFit(
            name,
            None,
            (
                Finding(
                    Level.FAIL, name, f"cannot read args: {exc}", "write numbers after --max-model-len and the like"
                ),
            ),
        )
    if not asks_for_gpus(spec.gpus):
        return _fit_cpu(name, spec, args, info, inventory)
    model = _model(args, info)
    blockers, selected, used = _blockers(name, spec, args, inventory, model.shape if model else None)
    if model is None:
        return DeploymentFit(name, None, (*blockers, unknown(name, "no config.json or weight sizes yet")))
    est = _numbers(model, args.tensor_parallel_size, used, args)
    if blockers:
        return DeploymentFit(name, est, tuple(blockers))
    if est.needed is None:
        return DeploymentFit(name, est, (unknown(name, "the KV cache of this architecture is not modelled"),))
    what = (
        f"weights {human_bytes(est.weights or 0)} + KV cache {human_bytes(est.kv_cache or 0)} for {model.context} "
        f"tokens + overhead {human_bytes(est.overhead or 0)}"
    )
    return DeploymentFit(name, est, (judge(name, est, what, _remedy(est, model, selected, args)),))


def _remedy(est: MemoryEstimate, model: _Model, selected: tuple[Gpu, ...], args: VllmArgs) -> str:
    remedies = []
    if est.max_context_len and model.context and est.max_context_len < model.context:
        remedies.append(f"pass --max-model-len {est.max_context_len} (the longest that fits)")
    for tp in (2, 4, 8):
        if tp <= args.tensor_parallel_size or tp > len(selected):
            continue
        if model.shape is not None and model.shape.heads % tp:
            continue  # vLLM needs the attention heads to divide evenly
        bigger = _numbers(model, tp, selected[:tp], args)
        if bigger.needed is not None and bigger.available is not None and bigger.needed <= bigger.available:
            remedies.append(f"spread it over {tp} GPUs with --tensor-parallel-size {tp}")
            break
    else:
        remedies.append("use more or larger GPUs")
    remedies.append("use a quantized model (AWQ, GPTQ or FP8)")
    return "; or ".join(remedies)


# -- the CPU build (gpus: 0) ---------------------------------------------------------------


def _fit_cpu(name: str, spec: Any, args: VllmArgs, info: ModelInfo, inventory: Inventory) -> DeploymentFit:
    """RAM for a vllm-cpu container: weights + ``VLLM_CPU_KVCACHE_SPACE`` + overhead, or vLLM's own share."""
    try:
        from .deployments.vllm_spec import cpu_kvcache_env  # the default the container gets when env sets none

        space = cpu_kv_cache_space({**cpu_kvcache_env(spec), **spec.env})
    except ValueError:
        return DeploymentFit(
            name,
            None,
            (Finding(Level.FAIL, name, f"env {CPU_KV_ENV} must be a whole number of GiB", f'e.g. {CPU_KV_ENV}: "4"'),),
        )
    model = _model(args, info)
    if model is None:
        return DeploymentFit(name, None, (unknown(name, "no config.json or weight sizes yet"),))
    memory = inventory.memory
    utilization = args.gpu_memory_utilization if "gpu_memory_utilization" in args.given else VLLM_CPU_UTILIZATION
    overhead = VLLM_CPU_OVERHEAD
    reserved = int(utilization * memory.total)
    kv = space if space is not None else max(0, reserved - model.weights - overhead)
    per_token = kv_bytes_per_token(model.shape, model.kv_bytes) if model.shape else None
    longest = None
    if per_token:
        longest = vllm_max_context(kv, 0, 0, per_token, block_size=VLLM_CPU_BLOCK_SIZE)
        if model.shape and model.shape.max_position_embeddings:
            longest = min(longest, model.shape.max_position_embeddings)
    needed = model.weights + kv + overhead if space is not None else reserved
    est = MemoryEstimate("RAM", needed, memory.available, model.weights, kv, overhead, model.context, longest)
    set_it = f'set `env: {{{CPU_KV_ENV}: "N"}}` (GiB of KV cache)'
    parts = f"weights {human_bytes(model.weights)} + KV cache {human_bytes(kv)} + overhead {human_bytes(overhead)}"
    if space is not None:
        findings = [judge(name, est, parts, f"{set_it} lower, or use a smaller model")]
    else:
        head = (
            f"{CPU_KV_ENV} unset: vLLM reserves {utilization:g} x {human_bytes(memory.total)} RAM = "
            f"{human_bytes(reserved)}"
        )
        findings = [
            Finding(
                Level.FAIL,
                name,
                f"{head}, more than the {human_bytes(memory.available)} available: it refuses to start",
                f"{set_it}, or free RAM",
            )
            if reserved > memory.available
            else Finding(
                Level.WARN,
                name,
                f"{head} ({parts}): the KV cache is whatever RAM is left",
                f"{set_it} to what the context needs, so it fits any machine that has that much",
            )
        ]
    kv_need = per_token * model.context if per_token and model.context else None
    if kv_need is not None and kv_need > kv:
        findings.append(
            Finding(
                Level.FAIL,
                name,
                f"the KV cache ({human_bytes(kv)}) holds {longest or 0} tokens; "
                f"a {model.context}-token context needs {human_bytes(kv_need)}",
                f"pass --max-model-len {longest}, or raise {CPU_KV_ENV}" if longest else f"raise {CPU_KV_ENV}",
            )
        )
    return DeploymentFit(name, est, tuple(findings))
