"""Deployments against inventories: OK / WARN / FAIL, remedies and the longest context that fits."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from provision.estimate import GIB, GgufInfo, ModelShape, kv_bytes_per_token, model_shape, weights_bytes
from provision.fit import (
    ModelInfo,
    check_disk,
    check_requirements,
    fit_deployment,
)
from provision.hardware import Finding, Gpu, GpuProbe, Inventory, Level, MemoryProbe
from provision.manifest import (
    OllamaDeployment,
    OpenAIDeployment,
    Requirements,
    TransformersDeployment,
    VllmDeployment,
)
from provision.report.hardware import fit_dict
from tests.typed import json_object, known

CONFIGS = Path(__file__).parent.parent / "fixtures" / "configs"
GB24 = 25_757_220_864
GB16 = 17_171_480_576  # 16376 MiB
GB80 = 85_899_345_920


def fit_findings(name: str, deployment: Any, info: ModelInfo | None, inventory: Inventory) -> list[Finding]:
    return list(fit_deployment(name, deployment, info, inventory).findings)


def config(name: str) -> dict[str, Any]:
    return json_object(CONFIGS / f"{name}.json")


def machine(
    *totals: int, cc: tuple[int, int] = (8, 9), ram: int = 64 * GIB, free: list[int] | None = None
) -> Inventory:
    gpus = tuple(
        Gpu(i, "NVIDIA GPU", f"GPU-{i}", total, (free or list(totals))[i], 0, cc) for i, total in enumerate(totals)
    )
    return Inventory(
        gpu=GpuProbe(gpus, "550.54.15", "12.4"), memory=MemoryProbe(ram, ram), disk=None, docker=None, ollama=None
    )


def shape(info: ModelInfo) -> ModelShape:
    return known(model_shape(known(info.config)))


def vllm(*args: str, gpus: Any = "all") -> VllmDeployment:
    return VllmDeployment(engine="vllm", model="m", args=args, gpus=gpus)


# -- vLLM ----------------------------------------------------------------------------------


def test_qwen25_7b_bf16_32k_fits_one_24gb_gpu() -> None:
    info = ModelInfo(config("Qwen2.5-7B-Instruct"))
    fit = fit_deployment("qwen", vllm("--max-model-len", "32768"), info, machine(GB24))
    assert fit.level is Level.OK
    est = known(fit.estimate)
    assert est.where == "GPU 0" and est.available == int(0.9 * GB24)
    assert est.kv_cache == 57_344 * 32_768
    assert est.needed == known(est.weights) + known(est.kv_cache) + known(est.overhead)
    assert est.max_context_len == 32_768  # more would fit, but not beyond the model's own 32k


def test_qwen25_7b_bf16_does_not_fit_16gb() -> None:
    [finding] = fit_findings(
        "qwen", vllm("--max-model-len", "32768"), ModelInfo(config("Qwen2.5-7B-Instruct")), machine(GB16)
    )
    assert finding.level is Level.FAIL and "does not fit" in finding.message
    assert "quantized" in finding.remedy
    assert "--max-model-len" not in finding.remedy  # the weights alone leave no room: no context helps


def test_llama_default_context_fails_and_names_the_longest_that_fits() -> None:
    info = ModelInfo(config("Llama-3.1-8B"))
    fit = fit_deployment("llama", vllm(), info, machine(GB24))
    [finding] = fit.findings
    est = known(fit.estimate)
    assert finding.level is Level.FAIL and est.context_len == 131_072  # max_position_embeddings
    longest = known(est.max_context_len)
    assert longest % 16 == 0 and f"--max-model-len {longest}" in finding.remedy
    per_token = kv_bytes_per_token(shape(info), 2)
    base = known(est.weights) + known(est.overhead)
    assert base + longest * per_token <= known(est.available) < base + (longest + 16) * per_token
    # and that length does fit when asked for
    assert fit_deployment("llama", vllm("--max-model-len", str(longest)), info, machine(GB24)).level is not Level.FAIL


def test_more_gpus_are_suggested_when_tensor_parallel_would_fit() -> None:
    [finding] = fit_findings("llama", vllm(), ModelInfo(config("Llama-3.1-8B")), machine(GB24, GB24))
    assert finding.level is Level.FAIL and "--tensor-parallel-size 2" in finding.remedy


def test_tensor_parallel_over_two_80gb_gpus() -> None:
    fit = fit_deployment(
        "llama", vllm("--tensor-parallel-size", "2"), ModelInfo(config("Llama-3.1-8B")), machine(GB80, GB80, cc=(8, 0))
    )
    assert fit.level is Level.OK
    assert known(fit.estimate).where == "GPU 0,1" and known(fit.estimate).available == int(0.9 * GB80) * 2


def test_close_to_the_limit_warns() -> None:
    info = ModelInfo(config("Qwen2.5-7B-Instruct"))
    needed = known(fit_deployment("q", vllm("--max-model-len", "32768"), info, machine(GB24)).estimate).needed
    total = int(known(needed) / 0.95 / 0.9)  # needed is 95% of usable
    [finding] = fit_findings("q", vllm("--max-model-len", "32768"), info, machine(total))
    assert finding.level is Level.WARN and "to spare" in finding.message


def test_lower_utilization_and_fp8_cache_are_read_from_args() -> None:
    info = ModelInfo(config("Llama-3.1-8B"))
    low = fit_deployment("l", vllm("--gpu-memory-utilization", "0.5", "--max-model-len", "8192"), info, machine(GB24))
    assert known(low.estimate).available == int(0.5 * GB24) and low.level is Level.FAIL
    fp8 = fit_deployment("l", vllm("--kv-cache-dtype", "fp8", "--max-model-len", "8192"), info, machine(GB24))
    assert known(fp8.estimate).kv_cache == 8192 * 65_536


@pytest.mark.parametrize(
    ("deployment", "inventory", "expected"),
    [
        (vllm(), machine(), "none was found"),
        (vllm(gpus=3), machine(GB24, GB24), "asks for 3 GPUs"),
        (vllm(gpus=(1,)), machine(GB24), "asks for GPU 1"),
        (vllm("-tp", "2"), machine(GB24), "needs 2 GPUs"),
        (vllm(), machine(GB24, free=[GB24 // 3]), "--gpu-memory-utilization 0.33"),
    ],
)
def test_vllm_cannot_start(deployment: VllmDeployment, inventory: Inventory, expected: str) -> None:
    [finding] = fit_findings("v", deployment, ModelInfo(config("Qwen3-0.6B")), inventory)
    assert finding.level is Level.FAIL
    assert expected in finding.message + finding.remedy


def test_vllm_without_gpus_still_estimates_beside_the_blocker() -> None:
    info = ModelInfo(config("Llama-3.1-8B"))
    fit = fit_deployment("v", vllm("--max-model-len", "8192"), info, machine())
    [finding] = fit.findings
    assert finding.level is Level.FAIL and "none was found" in finding.message
    est = known(fit.estimate)
    assert est.weights == weights_bytes(known(info.config), "auto") and est.kv_cache == 131_072 * 8192
    assert known(est.overhead) > 0 and est.needed == known(est.weights) + known(est.kv_cache) + known(est.overhead)
    assert est.available is None and est.max_context_len is None


def test_unknown_model_warns() -> None:
    [finding] = fit_findings("v", vllm(), None, machine(GB24))
    assert finding.level is Level.WARN and "cannot estimate" in finding.message


def test_real_weight_sizes_without_config_still_judge() -> None:
    fit = fit_deployment("v", vllm(), ModelInfo(weights_bytes=30 * GIB), machine(GB24))
    assert fit.level is Level.WARN and known(fit.estimate).weights == 30 * GIB  # KV cache unknown without a config


# -- transformers, Ollama, hosted ----------------------------------------------------------


def test_transformers_on_gpu_or_in_ram() -> None:
    info = ModelInfo(config("DeepSeek-R1-Distill-Qwen-1.5B"))
    spec = TransformersDeployment(engine="transformers", model="m", dtype="float16")
    on_gpu = fit_deployment("t", spec, info, machine(GB24))
    assert known(on_gpu.estimate).where == "GPU 0" and on_gpu.level is Level.OK
    assert known(on_gpu.estimate).needed == int(known(known(on_gpu.estimate).weights) * 1.2)
    in_ram = fit_deployment("t", spec, info, machine(ram=3 * GIB))
    assert known(in_ram.estimate).where == "RAM" and in_ram.level is Level.FAIL
    fp32 = fit_deployment(
        "t", TransformersDeployment(engine="transformers", model="m", dtype="float32"), info, machine(ram=8 * GIB)
    )
    assert (
        known(fp32.estimate).weights == 2 * known(known(on_gpu.estimate).weights)
        and "half precision" in fp32.findings[0].remedy
    )
    missing = fit_deployment(
        "t", TransformersDeployment(engine="transformers", model="m", device="cuda:1"), info, machine(GB24)
    )
    assert missing.level is Level.FAIL


QWEN3_GGUF = GgufInfo(
    file_bytes=522_000_000,
    architecture="qwen3",
    layers=28,
    kv_heads=8,
    key_length=128,
    value_length=128,
    context_length=40_960,
)


def test_ollama_default_context_and_placement() -> None:
    spec = OllamaDeployment(engine="ollama", model="m")
    cpu = fit_deployment("o", spec, ModelInfo(gguf=QWEN3_GGUF), machine())
    assert known(cpu.estimate).where == "RAM" and known(cpu.estimate).context_len == 4096 and cpu.level is Level.OK
    assert known(cpu.estimate).needed == 522_000_000 + 28 * 8 * 256 * 2 * 4096
    # a "24 GB" card reports 23.99 GiB: under Ollama's 24 GiB tier, so still 4096
    assert known(fit_deployment("o", spec, ModelInfo(gguf=QWEN3_GGUF), machine(GB24)).estimate).context_len == 4096
    two = fit_deployment("o", spec, ModelInfo(gguf=QWEN3_GGUF), machine(GB24, GB24))
    assert known(two.estimate).where == "GPU 0,1" and known(two.estimate).context_len == 32_768


def test_ollama_split_warns_and_too_big_fails() -> None:
    big = GgufInfo(
        file_bytes=20 * GIB,
        architecture="llama",
        layers=32,
        kv_heads=8,
        key_length=128,
        value_length=128,
        context_length=131_072,
    )
    spec = OllamaDeployment(engine="ollama", model="m", parameters={"num_ctx": 8192})
    split = fit_deployment("o", spec, ModelInfo(gguf=big), machine(GB16))
    assert known(split.estimate).where == "GPU 0 + RAM" and split.level is Level.WARN
    assert known(split.estimate).context_len == 8192
    assert fit_deployment("o", spec, ModelInfo(gguf=big), machine(ram=8 * GIB)).level is Level.FAIL


def test_hosted_api_needs_nothing_local() -> None:
    spec = OpenAIDeployment(engine="openai", base_url="https://api.deepseek.com", served_model="deepseek-chat")
    fit = fit_deployment("api", spec, None, machine())
    assert fit.level is Level.OK and fit.estimate is None


# -- requires: and disk --------------------------------------------------------------------


def test_requirements() -> None:
    one_4090 = machine(GB24, cc=(8, 9))
    assert check_requirements("d", Requirements(min_vram_gb=24), one_4090)[0].level is Level.OK  # 25.8 GB
    assert check_requirements("d", Requirements(min_gpus=2), one_4090)[0].level is Level.FAIL
    assert check_requirements("d", Requirements(min_compute_capability=9.0), one_4090)[0].level is Level.FAIL
    assert check_requirements("d", Requirements(min_compute_capability=8.6), one_4090)[0].level is Level.OK
    a100s = machine(GB80, GB80, cc=(8, 0))
    assert check_requirements("d", Requirements(min_gpus=2, min_vram_gb=80), a100s)[0].level is Level.OK
    assert check_requirements("d", Requirements(min_gpus=0), machine()) == []


def test_requirements_join_the_fit_findings() -> None:
    spec = VllmDeployment(engine="vllm", model="m", args=("--max-model-len", "4096"), requires=Requirements(min_gpus=2))
    findings = fit_findings("v", spec, ModelInfo(config("Qwen3-0.6B")), machine(GB24))
    assert [f.level for f in findings] == [Level.OK, Level.FAIL]


def test_check_disk_levels() -> None:
    assert check_disk(5 * GIB, 100 * GIB, "/models").level is Level.OK
    assert check_disk(95 * GIB, 100 * GIB, "/models").level is Level.WARN
    failed = check_disk(120 * GIB, 100 * GIB, "/models")
    assert failed.level is Level.FAIL and "models_dir" in failed.remedy and "/models" in failed.message
    assert check_disk(1, None, "/models").level is Level.WARN


def test_fit_json() -> None:
    fit = fit_deployment("llama", vllm(), ModelInfo(config("Llama-3.1-8B")), machine(GB24))
    document = json.loads(json.dumps(fit_dict(fit)))
    assert document["level"] == "FAIL" and document["estimate"]["context_len"] == 131_072
    assert document["findings"][0]["remedy"].startswith("pass --max-model-len")


def test_render_fits_shows_where_and_longest_context() -> None:
    from provision.report import console
    from provision.report.hardware import render_hardware

    inventory = machine(GB24)
    fits = [
        fit_deployment("llama", vllm(), ModelInfo(config("Llama-3.1-8B")), inventory),
        fit_deployment("chat", OllamaDeployment(engine="ollama", model="m"), None, inventory),
    ]
    with console().capture() as captured:
        render_hardware(inventory, fits)
    text = captured.get()
    assert "llama" in text and "FAIL" in text and str(known(fits[0].estimate).max_context_len) in text
    assert "cannot estimate" in text


# -- planning for GPUs you don't have (the GPU table) --------------------------------------


def on(gpu: str, count: int = 1) -> Inventory:
    from provision.gpus import find_gpu, model_inventory

    return model_inventory(known(find_gpu(gpu)), count, MemoryProbe(64 * GIB, 64 * GIB))


def llama_by_hand() -> tuple[int, int]:
    """Llama-3.1-8B's bf16 weight bytes and KV bytes per token, from its config alone."""
    c = config("Llama-3.1-8B")
    h, inter, layers, vocab = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"], c["vocab_size"]
    head = h // c["num_attention_heads"]
    kv = c["num_key_value_heads"] * head
    per_layer = 2 * h * h + 2 * h * kv + 3 * h * inter + 2 * h  # q, o; k, v; gate, up, down; two norms
    params = 2 * vocab * h + layers * per_layer + h  # untied embeddings and LM head; the final norm
    return 2 * params, 2 * layers * kv * 2


def test_llama_131k_bf16_does_not_fit_one_l4_and_the_longest_context_is_what_the_sizes_imply() -> None:
    fit = fit_deployment("llama", vllm(), ModelInfo(config("Llama-3.1-8B")), on("L4"))
    est = known(fit.estimate)
    assert fit.level is Level.FAIL and est.context_len == 131_072
    weights, per_token = llama_by_hand()
    usable = 0.9 * 23034 * 2**20  # vLLM's default share of what an L4 reports
    assert est.weights == weights
    # whatever the runtime overhead, it is under 2 GiB: the longest context lies between these
    longest = known(est.max_context_len)
    assert (usable - weights - 2 * GIB) / per_token <= longest <= (usable - weights) / per_token
    assert 25_000 < longest < 41_000
    assert f"--max-model-len {est.max_context_len}" in fit.findings[0].remedy
    at_longest = fit_deployment(
        "llama", vllm("--max-model-len", str(est.max_context_len)), ModelInfo(config("Llama-3.1-8B")), on("L4")
    )
    assert at_longest.level is not Level.FAIL


def test_llama_131k_bf16_fits_one_h100() -> None:
    fit = fit_deployment("llama", vllm(), ModelInfo(config("Llama-3.1-8B")), on("H100"))
    assert fit.level is Level.OK and known(fit.estimate).max_context_len == 131_072  # the model's own limit


def test_two_l4s_with_tensor_parallelism_fit_a_context_one_cannot() -> None:
    info = ModelInfo(config("Llama-3.1-8B"))
    one = fit_deployment("llama", vllm("--max-model-len", "65536"), info, on("L4"))
    two = fit_deployment("llama", vllm("--max-model-len", "65536", "-tp", "2"), info, on("L4", 2))
    assert one.level is Level.FAIL and two.level is Level.OK
    assert known(two.estimate).where == "GPU 0,1" and known(known(two.estimate).max_context_len) > 2 * known(
        known(one.estimate).max_context_len
    )
    # split as vLLM does: each GPU holds half of the 8 KV heads, and half of all but the norms
    weights, per_token = llama_by_hand()
    assert known(two.estimate).kv_cache == per_token * 65_536
    assert weights < known(known(two.estimate).weights) < weights * 1.001


def test_tensor_parallel_must_divide_the_attention_heads() -> None:
    [finding] = fit_findings("q", vllm("-tp", "8"), ModelInfo(config("Qwen2.5-7B-Instruct")), on("L4", 8))  # 28 heads
    assert finding.level is Level.FAIL and "does not divide" in finding.message


def test_bfloat16_on_a_gpu_before_ampere_fails_and_auto_does_not() -> None:
    info = ModelInfo(config("Qwen3-0.6B"))
    [finding] = fit_findings("q", vllm("--dtype", "bfloat16", "--max-model-len", "4096"), info, on("T4"))
    assert finding.level is Level.FAIL and "--dtype float16" in finding.remedy
    assert fit_deployment("q", vllm("--max-model-len", "4096"), info, on("T4")).level is Level.OK


def test_requirements_are_judged_against_the_target() -> None:
    spec = VllmDeployment(
        engine="vllm", model="m", args=("--max-model-len", "4096"), requires=Requirements(min_compute_capability=9.0)
    )
    info = ModelInfo(config("Qwen3-0.6B"))
    assert fit_deployment("q", spec, info, on("L4")).level is Level.FAIL
    assert fit_deployment("q", spec, info, on("H100")).level is Level.OK


# -- vLLM on the CPU (gpus: 0) -------------------------------------------------------------


def cpu_vllm(*args: str, env: dict[str, str] | None = None) -> VllmDeployment:
    return VllmDeployment(engine="vllm", model="m", gpus=0, args=args, env=env or {})


def test_cpu_vllm_needs_weights_plus_the_kv_space_it_is_given() -> None:
    info = ModelInfo(config("Qwen3-0.6B"))
    fit = fit_deployment(
        "c", cpu_vllm("--max-model-len", "8192", env={"VLLM_CPU_KVCACHE_SPACE": "2"}), info, machine(ram=16 * GIB)
    )
    est = known(fit.estimate)
    assert fit.level is Level.OK and est.where == "RAM" and est.available == 16 * GIB
    assert est.kv_cache == 2 * GIB and est.needed == known(est.weights) + 2 * GIB + known(est.overhead)
    per_token = kv_bytes_per_token(shape(info), 2)
    assert est.max_context_len == 2 * GIB // per_token // 128 * 128  # whole 128-token CPU blocks
    tight = fit_deployment(
        "c", cpu_vllm("--max-model-len", "8192", env={"VLLM_CPU_KVCACHE_SPACE": "2"}), info, machine(ram=4 * GIB)
    )
    assert tight.level is Level.FAIL and "VLLM_CPU_KVCACHE_SPACE" in tight.findings[0].remedy


def test_cpu_vllm_context_longer_than_the_kv_space_fails() -> None:
    info = ModelInfo(config("Qwen3-0.6B"))  # 40960 tokens x 112 KiB > 1 GiB
    fit = fit_deployment("c", cpu_vllm(env={"VLLM_CPU_KVCACHE_SPACE": "1"}), info, machine(ram=64 * GIB))
    failed = [f for f in fit.findings if f.level is Level.FAIL]
    assert failed and f"--max-model-len {known(fit.estimate).max_context_len}" in failed[0].remedy


def test_cpu_vllm_gets_the_containers_default_kv_space() -> None:
    # provision starts a gpus: 0 container with VLLM_CPU_KVCACHE_SPACE=4 when env sets none
    fit = fit_deployment(
        "c", cpu_vllm("--max-model-len", "4096"), ModelInfo(config("Qwen3-0.6B")), ram_only(64 * GIB, 63 * GIB)
    )
    assert fit.estimate is not None and known(fit.estimate).kv_cache == 4 * GIB


def test_cpu_vllm_without_kv_space_takes_most_of_ram() -> None:
    info = ModelInfo(config("Qwen3-0.6B"))
    unset = {"VLLM_CPU_KVCACHE_SPACE": ""}  # empty: vLLM's own share of RAM
    roomy = fit_deployment("c", cpu_vllm("--max-model-len", "4096", env=unset), info, ram_only(64 * GIB, 63 * GIB))
    assert roomy.level is Level.WARN and known(roomy.estimate).needed == int(0.92 * 64 * GIB)
    assert "VLLM_CPU_KVCACHE_SPACE" in roomy.findings[0].remedy
    busy = fit_deployment("c", cpu_vllm("--max-model-len", "4096", env=unset), info, ram_only(64 * GIB, 40 * GIB))
    assert busy.level is Level.FAIL and "refuses to start" in busy.findings[0].message
    bad = fit_deployment("c", cpu_vllm(env={"VLLM_CPU_KVCACHE_SPACE": "4.5"}), info, machine())
    assert bad.level is Level.FAIL and "whole number" in bad.findings[0].message


def ram_only(total: int, available: int) -> Inventory:
    return Inventory(gpu=GpuProbe(), memory=MemoryProbe(total, available), disk=None, docker=None, ollama=None)


def test_smallest_listed_gpu_that_fits() -> None:
    from provision.gpus import by_memory
    from provision.preflight import smallest_gpu

    info = ModelInfo(config("Llama-3.1-8B"))
    ram = MemoryProbe(64 * GIB, 64 * GIB)
    name = smallest_gpu("llama", vllm(), info, ram)
    order = [g.name for g in by_memory()]
    assert name in order
    assert fit_deployment("llama", vllm(), info, on(name)).level is not Level.FAIL
    assert all(
        fit_deployment("llama", vllm(), info, on(smaller)).level is Level.FAIL for smaller in order[: order.index(name)]
    )
    two = known(smallest_gpu("llama", vllm("-tp", "2"), info, ram))
    assert two.endswith("x2") and order.index(two[:-2]) < order.index(name)
    assert smallest_gpu("c", cpu_vllm(), info, ram) is None  # runs without a GPU


def test_encoder_deployments_have_no_kv_cache() -> None:
    info = ModelInfo(config("bert-base-embedding"))
    local = fit_deployment(
        "e", TransformersDeployment(engine="transformers", model="m", device="cpu"), info, machine(ram=4 * GIB)
    )
    est = known(local.estimate)
    assert local.level is Level.OK and est.kv_cache == 0 and est.context_len == 512
    assert est.weights == 109_482_240 * 4 and est.needed == known(est.weights) + known(est.overhead)
    assert "activations" in local.findings[0].message
    served = fit_deployment("e", vllm(), info, on("T4"))
    assert served.level is Level.OK and known(served.estimate).kv_cache == 0
    assert known(served.estimate).weights == 109_482_240 * 2  # vLLM serves a float32 checkpoint in half precision
    assert known(served.estimate).max_context_len == 512
