"""A tiny random chat model, built offline in about a second, for the transformers engine.

The folder it writes is what ``save_pretrained`` writes for a real model, so the code under
test loads it exactly as it would load a downloaded one::

    <path>/
      config.json               2-layer Qwen3, hidden size 64
      generation_config.json
      model.safetensors         random weights (about 400 KB)
      tokenizer.json            512-token byte-level BPE trained on a few sentences
      tokenizer_config.json     eos <|im_end|>, pad <|endoftext|>
      chat_template.jinja       ChatML, as Qwen uses

Its answers are gibberish; tests check the plumbing (streaming, counting, errors), not sense.
"""

from __future__ import annotations

from pathlib import Path

import pytest

_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
_CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_CORPUS = [
    "You are a helpful assistant. What is the capital of France? The capital of France is Paris.",
    "明月几时有，把酒问青天。不知天上宫阙，今夕是何年。",
    "The quick brown fox jumps over the lazy dog while numbers 0123456789 count along.",
    "Streaming tokens arrive one by one; each chunk carries a little text and a finish reason.",
]


def make_tiny_chat_model(path: Path) -> Path:
    """Write a random Qwen3 chat model with its tokenizer to ``path``; returns ``path``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        special_tokens=_SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_CORPUS * 20, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tokenizer.chat_template = _CHAT_TEMPLATE

    config = Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=1024,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
        tie_word_embeddings=True,
    )
    path.mkdir(parents=True, exist_ok=True)
    import torch

    torch.manual_seed(0)  # the same random weights every run: generated text is reproducible
    Qwen3ForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny chat model per test session (building it imports transformers: ~5 s)."""
    return make_tiny_chat_model(tmp_path_factory.mktemp("tiny-model"))
