"""The memory estimator against real model configs and hand-computed figures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from provision.estimate import (
    GIB,
    ModelShape,
    cpu_kv_cache_space,
    dtype_bytes,
    gguf_info_from_metadata,
    kv_bytes_per_token,
    model_shape,
    ollama_default_context,
    parameter_count,
    parse_vllm_args,
    read_gguf,
    vllm_max_context,
    vllm_overhead,
    weights_bytes,
    weights_on_gpus,
)
from tests.typed import json_object, known

CONFIGS = Path(__file__).parent.parent / "fixtures" / "configs"

# Published parameter counts: the models' cards / the hub's safetensors totals.
PUBLIC_PARAMS = {
    "Qwen3-0.6B": 0.6e9,  # model card: 0.6B (0.44B non-embedding), tied embeddings
    "DeepSeek-R1-Distill-Qwen-1.5B": 1.78e9,  # hub: 1.78B params (untied, unlike Qwen2.5-1.5B)
    "Qwen2.5-7B-Instruct": 7.61e9,  # model card: 7.61B (6.53B non-embedding)
    "Llama-3.1-8B": 8.03e9,  # hub: 8.03B params
}


def load(name: str) -> dict[str, Any]:
    return json_object(CONFIGS / f"{name}.json")


def shape_of(config: dict[str, Any]) -> ModelShape:
    """The shape of a dense model (the estimator returns None for the ones it does not model)."""
    return known(model_shape(config))


@pytest.mark.parametrize("name", sorted(PUBLIC_PARAMS))
def test_parameter_count_within_5_percent_of_public_figure(name: str) -> None:
    shape = model_shape(load(name))
    assert shape is not None
    assert parameter_count(shape) == pytest.approx(PUBLIC_PARAMS[name], rel=0.05)


@pytest.mark.parametrize("name", sorted(PUBLIC_PARAMS))
def test_weights_at_dtype_are_params_times_dtype_size(name: str) -> None:
    config = load(name)
    params = parameter_count(shape_of(config))
    assert weights_bytes(config, "auto") == params * 2  # bf16 checkpoints
    assert weights_bytes(config, "float32") == params * 4
    assert weights_bytes(config, "fp8") == params
    assert weights_bytes(config, "int4") == params // 2


def test_qwen3_non_embedding_count_matches_card() -> None:
    shape = shape_of(load("Qwen3-0.6B"))
    non_embedding = parameter_count(shape) - shape.vocab_size * shape.hidden_size
    assert non_embedding == pytest.approx(0.44e9, rel=0.05)


def test_shape_reads_gqa_head_dim_and_tying() -> None:
    qwen3 = shape_of(load("Qwen3-0.6B"))
    assert (qwen3.kv_heads, qwen3.head_dim, qwen3.tied_embeddings, qwen3.qk_norm) == (8, 128, True, True)
    r1 = shape_of(load("DeepSeek-R1-Distill-Qwen-1.5B"))
    assert (r1.kv_heads, r1.head_dim, r1.tied_embeddings, r1.qkv_bias) == (2, 1536 // 12, False, True)
    llama = shape_of(load("Llama-3.1-8B"))
    assert (llama.qkv_bias, llama.head_dim) == (False, 128)


def test_tied_embeddings_drop_the_lm_head() -> None:
    config = load("Llama-3.1-8B")
    untied = parameter_count(shape_of(config))
    tied = parameter_count(shape_of({**config, "tie_word_embeddings": True}))
    assert untied - tied == 128256 * 4096


def test_nested_text_config_is_read() -> None:
    inner = load("Qwen2.5-7B-Instruct")
    wrapped = {"model_type": "some_vl", "torch_dtype": "bfloat16", "text_config": inner}
    assert parameter_count(shape_of(wrapped)) == parameter_count(shape_of(inner))


def test_mixture_of_experts_is_not_modelled() -> None:
    assert model_shape({**load("Qwen3-0.6B"), "num_experts": 128}) is None
    assert model_shape({"hidden_size": 8}) is None


def test_kv_cache_exact_for_hand_computed_cases() -> None:
    # Qwen2.5-7B: 2 (K,V) x 28 layers x 4 KV heads x 128 dims x 2 bytes = 57,344 bytes per token.
    qwen = shape_of(load("Qwen2.5-7B-Instruct"))
    assert kv_bytes_per_token(qwen, 2) == 57_344
    assert kv_bytes_per_token(qwen, 2) * 32_768 == 1_879_048_192
    # Llama-3.1-8B: 2 x 32 x 8 x 128 x 2 = 131,072 bytes per token: 16 GiB at 128k tokens.
    llama = shape_of(load("Llama-3.1-8B"))
    assert kv_bytes_per_token(llama, 2) * 131_072 == 16 * GIB
    assert kv_bytes_per_token(llama, 1) * 131_072 == 8 * GIB  # fp8 cache


def test_kv_heads_replicate_when_tp_exceeds_them() -> None:
    r1 = shape_of(load("DeepSeek-R1-Distill-Qwen-1.5B"))  # 2 KV heads
    assert kv_bytes_per_token(r1, 2, tp=2) == kv_bytes_per_token(r1, 2)
    assert kv_bytes_per_token(r1, 2, tp=4) == 2 * kv_bytes_per_token(r1, 2)  # each of 4 GPUs holds one


def test_real_file_size_is_preferred_and_scaled_by_dtype() -> None:
    config = load("Qwen3-0.6B")
    stored = 1_503_300_328  # the checkpoint's own bf16 bytes, lm_head stored despite tying
    assert weights_bytes(config, "auto", stored_bytes=stored) == stored
    assert weights_bytes(config, "float32", stored_bytes=stored) == 2 * stored
    assert weights_bytes(config, "fp8", stored_bytes=stored) == stored // 2


def test_dtype_names_and_auto() -> None:
    assert dtype_bytes("torch.bfloat16") == 2
    assert dtype_bytes("half") == 2
    assert dtype_bytes("int4") == 0.5
    assert dtype_bytes("nonsense") is None
    config = {**load("Qwen3-0.6B"), "torch_dtype": None, "dtype": "float32"}  # transformers 5 spelling
    assert weights_bytes(config, "auto") == parameter_count(shape_of(config)) * 4
    assert weights_bytes({**config, "dtype": None}, "auto") is None


def test_prequantized_checkpoint_is_taken_as_stored() -> None:
    config = {**load("Qwen2.5-7B-Instruct"), "quantization_config": {"quant_method": "awq", "bits": 4}}
    assert weights_bytes(config, "float16", stored_bytes=5_580_000_000) == 5_580_000_000
    assert weights_bytes(config, "float16") == parameter_count(shape_of(config)) // 2


def test_parse_vllm_args_both_spellings_and_suffixes() -> None:
    args = parse_vllm_args(
        [
            "--max-model-len",
            "32k",
            "--gpu-memory-utilization=0.8",
            "-tp",
            "2",
            "--dtype",
            "float16",
            "--kv-cache-dtype=fp8",
            "--enforce-eager",
        ]
    )
    assert (args.max_model_len, args.gpu_memory_utilization, args.tensor_parallel_size) == (32_000, 0.8, 2)
    assert (args.dtype, args.kv_cache_dtype) == ("float16", "fp8")
    assert parse_vllm_args(["--max-model-len=32K"]).max_model_len == 32_768
    defaults = parse_vllm_args([])
    assert (defaults.max_model_len, defaults.gpu_memory_utilization, defaults.tensor_parallel_size) == (None, 0.9, 1)
    with pytest.raises(ValueError):
        parse_vllm_args(["--max-model-len", "long"])


def test_vllm_max_context_is_a_block_multiple_that_fits() -> None:
    usable, weights, overhead, per_token = 20 * GIB, 15 * GIB, GIB, 131_072
    longest = vllm_max_context(usable, weights, overhead, per_token)
    assert longest == 32_768  # 4 GiB / 128 KiB, already a multiple of 16
    assert vllm_max_context(usable, weights, overhead + 1, per_token) == 32_768 - 16
    assert vllm_max_context(usable, 19 * GIB, overhead, per_token) == 0


def test_vllm_overhead_documented_formula() -> None:
    qwen = shape_of(load("Qwen2.5-7B-Instruct"))
    assert vllm_overhead(qwen) == GIB + 8192 * (4 * 3584 + 2 * 18944) * 2
    assert vllm_overhead(qwen, tp=2) == 2 * (GIB + 8192 * (4 * 3584 + 18944) * 2)
    assert vllm_overhead(None, tp=2) == 2 * GIB


def test_ollama_default_context_tiers() -> None:
    assert ollama_default_context(0, 40_960) == 4096
    assert ollama_default_context(24 * GIB, 40_960) == 32_768
    assert ollama_default_context(80 * GIB, 40_960) == 40_960  # never above the model's own
    assert ollama_default_context(80 * GIB, None) == 262_144


def test_gguf_header_read_from_a_real_file(tmp_path: Path) -> None:
    import gguf
    import numpy as np

    path = tmp_path / "tiny.gguf"
    writer = gguf.GGUFWriter(str(path), "qwen3")
    writer.add_block_count(28)
    writer.add_context_length(40_960)
    writer.add_embedding_length(1024)
    writer.add_head_count(16)
    writer.add_head_count_kv(8)
    writer.add_key_length(128)
    writer.add_value_length(128)
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

    info = read_gguf(path)
    assert (info.architecture, info.layers, info.kv_heads, info.context_length) == ("qwen3", 28, 8, 40_960)
    assert info.file_bytes == path.stat().st_size
    # f16 cache: 28 layers x 8 KV heads x (128 + 128) x 2 bytes; the same as the HF formula for Qwen3-0.6B.
    assert info.kv_bytes_per_token == 28 * 8 * 256 * 2 == kv_bytes_per_token(shape_of(load("Qwen3-0.6B")), 2)


def test_gguf_metadata_from_ollama_show_defaults_head_size() -> None:
    info = gguf_info_from_metadata(
        {
            "general.architecture": "llama",
            "llama.block_count": 32,
            "llama.embedding_length": 4096,
            "llama.attention.head_count": 32,
            "llama.attention.head_count_kv": [8] * 32,
        },
        file_bytes=4_920_000_000,
    )
    assert (info.kv_heads, info.key_length, info.value_length) == (8, 128, 128)
    assert gguf_info_from_metadata({}, file_bytes=1).kv_bytes_per_token is None


def test_tensor_parallel_splits_all_but_the_norms_and_replicates_kv_heads_past_their_count() -> None:
    r1 = shape_of(load("DeepSeek-R1-Distill-Qwen-1.5B"))  # 12 heads, 2 KV heads, q/k/v biases
    weights = parameter_count(r1) * 2
    assert weights_on_gpus(r1, weights, 1) == weights
    h, d, layers = r1.hidden_size, r1.head_dim, r1.layers
    norms = (layers * 2 * h + h) * 2  # bytes every GPU holds whole
    one_kv_head = layers * 2 * (h * d + d) * 2  # K and V projections (weights + biases) of one KV head
    # tp=2: one KV head each, nothing replicated but the norms
    assert weights_on_gpus(r1, weights, 2) == pytest.approx(weights + norms, abs=2)
    # tp=4 > 2 KV heads: each GPU holds one whole KV head, so two more copies of each head's projections
    assert weights_on_gpus(r1, weights, 4) == pytest.approx(weights + 3 * norms + 2 * one_kv_head, abs=4)


def test_cpu_kv_cache_space_reads_vllm_cpu_kvcache_space_in_gib() -> None:
    assert cpu_kv_cache_space({"VLLM_CPU_KVCACHE_SPACE": "4"}) == 4 * GIB
    assert cpu_kv_cache_space({"VLLM_CPU_KVCACHE_SPACE": ""}) is None  # vLLM 0.32 ignores an empty value
    assert cpu_kv_cache_space({}) is None
    with pytest.raises(ValueError):
        cpu_kv_cache_space({"VLLM_CPU_KVCACHE_SPACE": "4GiB"})


def test_parsed_args_say_which_were_given() -> None:
    assert parse_vllm_args(["--gpu-memory-utilization", "0.5"]).given == {"gpu_memory_utilization"}
    assert parse_vllm_args([]).given == frozenset()


# -- encoder-only (BERT-like embedding models) ---------------------------------------------


def test_encoder_is_recognised_by_its_config_and_not_sized_as_a_decoder() -> None:
    from provision.encoder import is_encoder

    bert = load("bert-base-embedding")  # the BERT-base shape of bge-base-en-v1.5 and bert-base-uncased
    assert is_encoder(bert) and model_shape(bert) is None
    assert is_encoder({"architectures": ["XLMRobertaModel"]}) and is_encoder({"model_type": "xlm-roberta"})
    assert not any(is_encoder(load(name)) for name in PUBLIC_PARAMS)


def test_encoder_parameters_match_bert_base_and_weights_follow() -> None:
    from provision.encoder import encoder_parameter_count

    bert = load("bert-base-embedding")
    assert encoder_parameter_count(bert) == 109_482_240  # bert-base-uncased's published count, pooler included
    assert weights_bytes(bert, "auto") == 109_482_240 * 4  # stored in float32
    assert weights_bytes(bert, "float16") == 109_482_240 * 2


def test_encoder_activations_grow_with_the_square_of_the_length() -> None:
    from provision.encoder import encoder_activation_bytes

    bert = load("bert-base-embedding")
    at_512 = encoder_activation_bytes(bert, 512, 4)
    assert at_512 == (512 * (5 * 768 + 3072) + 12 * 512 * 512) * 4
    assert encoder_activation_bytes(bert, 512, 4, batch=8) == 8 * at_512
