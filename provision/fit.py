"""Will it fit? Deployments against an inventory, before anything is downloaded.

The inventory is this machine's (:mod:`provision.hardware`) or GPUs planned with ``--gpu`` /
``--vram`` (:mod:`provision.gpus`); vLLM's fit, GPU and CPU, is :mod:`provision.fit_vllm`.

Pure: the caller supplies what it knows about each model (:class:`ModelInfo`: ``config.json``,
the real size of the weight files from disk or the hub's listing, a GGUF header) and an
:class:`~provision.hardware.Inventory`; this module returns :class:`~provision.hardware.Finding` s.

Levels: FAIL when the estimate exceeds what is available (with a remedy: the longest context
that fits, more GPUs, a quantized model), WARN when it fits with less than 10% to spare or
cannot be estimated, OK otherwise. The formulas are in :mod:`provision.estimate`.

Where each engine puts a model:

- vllm: the first ``--tensor-parallel-size`` GPUs of those the deployment gets (``gpus``);
  usable = ``gpu_memory_utilization`` x VRAM of the smallest x tp. vLLM also refuses to start
  when a GPU has less free memory than that fraction of its total.
- transformers: ``device`` auto/cuda = GPU 0 when there is a GPU, ``cuda:N`` = GPU N, else RAM;
  the whole model on that one device, against its free memory.
- ollama: all GPUs' free memory, then RAM: a model that needs both is split (WARN, slower).
- openai: hosted; nothing local.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .encoder import encoder_activation_bytes, encoder_max_length, is_encoder
from .estimate import (
    TRANSFORMERS_OVERHEAD,
    GgufInfo,
    dtype_bytes,
    ollama_default_context,
    resolve_dtype,
    text_config,
    weights_bytes,
)
from .files import human_bytes
from .hardware import Finding, Inventory, Level, worst

if TYPE_CHECKING:
    from .manifest import Requirements

MARGIN = 0.10  # closer than this to the limit is a WARN


@dataclass(frozen=True)
class ModelInfo:
    """What the caller knows about a deployment's model; any part may be unknown."""

    config: Mapping[str, Any] | None = None  # config.json
    weights_bytes: int | None = None  # total size of the *.safetensors files, as stored
    gguf: GgufInfo | None = None


@dataclass(frozen=True)
class MemoryEstimate:
    """One deployment's need and where it goes. ``None`` fields are unknown."""

    where: str  # "GPU 0", "GPU 0,1", "RAM", "GPU 0,1 + RAM"
    needed: int | None
    available: int | None
    weights: int | None = None
    kv_cache: int | None = None
    overhead: int | None = None
    context_len: int | None = None
    max_context_len: int | None = None  # vLLM: the longest --max-model-len that fits


@dataclass(frozen=True)
class DeploymentFit:
    name: str
    estimate: MemoryEstimate | None  # None: nothing local (openai) or no place to run
    findings: tuple[Finding, ...]
    smallest_gpu: str | None = None  # the GPU table's smallest that fits ("L4", "A10Gx2"), when known

    @property
    def level(self) -> Level:
        return worst(self.findings)


def judge(name: str, est: MemoryEstimate, what: str, remedy: str) -> Finding:
    """OK / WARN (under 10% to spare) / FAIL for a complete estimate."""
    assert est.needed is not None and est.available is not None
    place = f"in {est.where}" if est.where == "RAM" else f"on {est.where}"
    head = f"needs {human_bytes(est.needed)} of {human_bytes(est.available)} {place} ({what})"
    if est.needed > est.available:
        return Finding(Level.FAIL, name, f"does not fit: {head}", remedy)
    if est.needed > est.available * (1 - MARGIN):
        return Finding(
            Level.WARN,
            name,
            f"fits with under {MARGIN:.0%} to spare: {head}",
            "expect out-of-memory errors under load; " + remedy,
        )
    return Finding(Level.OK, name, head)


def unknown(name: str, why: str) -> Finding:
    return Finding(
        Level.WARN, name, f"cannot estimate memory: {why}", "run `provision apply` to fetch the model, then check again"
    )


# -- transformers --------------------------------------------------------------------------


def _fit_transformers(name: str, spec: Any, info: ModelInfo, inventory: Inventory) -> DeploymentFit:
    weights: int | None
    if info.gguf is not None and info.gguf.parameters:
        # transformers de-quantizes GGUF weights on load: parameters x the dtype (float32 for "auto")
        weights = int(info.gguf.parameters * (dtype_bytes(spec.dtype) or 4))
    elif info.config is None:
        weights = info.weights_bytes  # at the stored dtype: the best guess without a config
    else:
        weights = weights_bytes(info.config, resolve_dtype(spec.dtype, info.config), stored_bytes=info.weights_bytes)
    device: str = spec.device
    if device in ("auto", "cuda") and inventory.gpus:
        device = "cuda:0"
    missing = None
    if device.startswith("cuda"):
        index = int(device.partition(":")[2] or 0)
        gpu = next((g for g in inventory.gpus if g.index == index), None)
        where, available = f"GPU {index}", gpu.memory_free if gpu else None
        missing = (
            None
            if gpu
            else Finding(Level.FAIL, name, f"device {spec.device} but no such GPU here", "use device: auto or cpu")
        )
    else:
        where, available = "RAM", inventory.memory.available
    if weights is None:
        return DeploymentFit(
            name, None, (*([missing] if missing else []), unknown(name, "no config.json or weight sizes yet"))
        )
    overhead, what = (
        int(weights * TRANSFORMERS_OVERHEAD),
        f"weights {human_bytes(weights)} + {TRANSFORMERS_OVERHEAD:.0%}",
    )
    encoder = info.config is not None and is_encoder(text_config(info.config))
    length = None
    if encoder:  # no KV cache: one forward pass's activations at the longest input
        c = text_config(info.config or {})
        length = encoder_max_length(c) or 512
        overhead = encoder_activation_bytes(c, length, dtype_bytes(resolve_dtype(spec.dtype, c)) or 4) or overhead
        what = f"weights {human_bytes(weights)} + activations {human_bytes(overhead)} for {length} tokens"
    est = MemoryEstimate(where, weights + overhead, available, weights, 0 if encoder else None, overhead, length)
    if missing is not None:
        return DeploymentFit(name, est, (missing,))
    remedy = (
        "load it in half precision (dtype: bfloat16 or float16)"
        if spec.dtype == "float32"
        else "use a smaller model, or free memory on that device"
    )
    return DeploymentFit(name, est, (judge(name, est, what, remedy),))


# -- Ollama --------------------------------------------------------------------------------


def _fit_ollama(name: str, spec: Any, info: ModelInfo, inventory: Inventory) -> DeploymentFit:
    gguf = info.gguf
    if gguf is None:
        return DeploymentFit(name, None, (unknown(name, "the GGUF file is not known yet"),))
    total_vram = sum(g.memory_total for g in inventory.gpus)
    num_ctx = int((spec.parameters or {}).get("num_ctx") or ollama_default_context(total_vram, gguf.context_length))
    per_token = gguf.kv_bytes_per_token
    kv = per_token * num_ctx if per_token is not None else None
    needed = gguf.file_bytes + (kv or 0)
    vram = sum(g.memory_free for g in inventory.gpus)
    on_gpus = "GPU " + ",".join(str(g.index) for g in inventory.gpus)
    if inventory.gpus and needed <= vram:
        where, available = on_gpus, vram
    elif inventory.gpus:
        where, available = on_gpus + " + RAM", vram + inventory.memory.available
    else:
        where, available = "RAM", inventory.memory.available
    est = MemoryEstimate(where, needed, available, gguf.file_bytes, kv, 0, num_ctx)
    what = f"file {human_bytes(gguf.file_bytes)} + KV cache {human_bytes(kv or 0)} for {num_ctx} tokens"
    finding = judge(name, est, what, "pick a smaller quantization tag (e.g. q4_K_M) or set parameters.num_ctx lower")
    findings = [finding]
    if kv is None:
        findings.append(
            Finding(
                Level.WARN,
                name,
                "the GGUF header lacks the attention sizes: KV cache not counted",
                "leave room for it: a few hundred MiB at 4096 tokens for a small model",
            )
        )
    if finding.level is Level.OK and where.endswith("+ RAM"):
        findings[0] = Finding(
            Level.WARN,
            name,
            f"split between GPU and CPU (slower): {finding.message}",
            "pick a smaller quantization tag or set parameters.num_ctx lower to stay on the GPU",
        )
    return DeploymentFit(name, est, tuple(findings))


# -- public --------------------------------------------------------------------------------


def fit_deployment(name: str, deployment: Any, model_info: ModelInfo | None, inventory: Inventory) -> DeploymentFit:
    """The estimate and findings for one deployment (a manifest ``*Deployment``), ``requires:`` included."""
    info = model_info or ModelInfo()
    if deployment.engine == "vllm":
        from .fit_vllm import fit_vllm  # here, not at the top: fit_vllm builds on this module's types

        fit = fit_vllm(name, deployment, info, inventory)
    elif deployment.engine == "transformers":
        fit = _fit_transformers(name, deployment, info, inventory)
    elif deployment.engine == "ollama":
        fit = _fit_ollama(name, deployment, info, inventory)
    else:
        fit = DeploymentFit(name, None, (Finding(Level.OK, name, "hosted API: no local memory needed"),))
    if deployment.requires is not None:
        fit = DeploymentFit(
            name, fit.estimate, fit.findings + tuple(check_requirements(name, deployment.requires, inventory))
        )
    return fit


def _capability(value: float) -> tuple[int, int]:
    major, _, minor = f"{value}".partition(".")
    return int(major), int(minor or 0)


def check_requirements(name: str, requires: Requirements, inventory: Inventory) -> list[Finding]:
    """``requires:`` against the GPUs: enough of them with the VRAM (decimal GB) and compute capability."""
    wants = []
    eligible = list(inventory.gpus)
    if requires.min_vram_gb is not None:
        wants.append(f"{requires.min_vram_gb:g} GB of VRAM")
        eligible = [g for g in eligible if g.memory_total >= requires.min_vram_gb * 1e9]
    if requires.min_compute_capability is not None:
        wants.append(f"compute capability {requires.min_compute_capability:g}")
        need_cc = _capability(requires.min_compute_capability)
        eligible = [g for g in eligible if g.compute_capability is not None and g.compute_capability >= need_cc]
    count = requires.min_gpus if requires.min_gpus is not None else (1 if wants else 0)
    if count == 0:
        return []
    what = f"{count} GPU{'s' if count > 1 else ''}" + (f" with {' and '.join(wants)}" if wants else "")
    if len(eligible) < count:
        return [
            Finding(
                Level.FAIL,
                name,
                f"requires {what}; this machine has {len(eligible)}",
                "run it on a machine that meets `requires:`, or relax it",
            )
        ]
    return [Finding(Level.OK, name, f"requires {what}: met")]


def check_disk(needed_bytes: int, free_bytes: int | None, path: str) -> Finding:
    """Room for ``needed_bytes`` more at ``path``: FAIL short of it, WARN with under 10% to spare."""
    if free_bytes is None:
        return Finding(Level.WARN, "disk", f"cannot read free space at {path}", "check the path and its permissions")
    head = f"{human_bytes(needed_bytes)} to download, {human_bytes(free_bytes)} free at {path}"
    short = needed_bytes - free_bytes * (1 - MARGIN)
    remedy = f"free {human_bytes(short)} there, or point settings.models_dir at a larger disk"
    if needed_bytes > free_bytes:
        return Finding(Level.FAIL, "disk", f"not enough disk: {head}", remedy)
    if needed_bytes > free_bytes * (1 - MARGIN):
        return Finding(Level.WARN, "disk", f"disk nearly full after download: {head}", remedy)
    return Finding(Level.OK, "disk", head)
