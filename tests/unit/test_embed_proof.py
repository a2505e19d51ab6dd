"""The embedding proof's pure rules, and pooling read from (possibly hostile) model files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from provision.client.base import Embeddings
from provision.client.transformers_embed import passes, read_pooling
from provision.errors import DeploymentError
from provision.manifest import EmbedProbe
from provision.smoke_embed import judge_embeddings, pair_cosines

PROBE = EmbedProbe(query="q", positive="p", negative="n")


def test_a_sane_batch_passes() -> None:
    vectors = [[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]]
    assert judge_embeddings([PROBE], Embeddings(vectors), expect_dimension=2) is None
    near, far = pair_cosines([PROBE], vectors)
    assert near is not None and far is not None and near > 0.99 and abs(far) < 1e-9


@pytest.mark.parametrize(
    ("vectors", "expected", "reason"),
    [
        ([[1.0, 0.0], [1.0, 0.0]], 2, "the server returned 2 vectors for 3 inputs"),
        ([[1.0, 0.0], [1.0], [0.0, 1.0]], None, "vectors of 1, 2 dimensions in one batch"),
        ([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]], 3, "dimension 2, but expect_dimension says 3"),
        ([[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]], None, "a vector has a zero or non-finite norm"),
        (
            [[1.0, 0.0], [0.0, 1.0], [0.9, 0.1]],
            None,
            "the paraphrase is not closer than the unrelated text for 'q': cos 0.000 vs 0.994",
        ),
    ],
)
def test_each_failure_has_its_reason(vectors: list[list[float]], expected: int | None, reason: str) -> None:
    assert judge_embeddings([PROBE], Embeddings(vectors), expect_dimension=expected) == reason


def test_the_models_own_dimension_is_the_default_expectation() -> None:
    batch = Embeddings([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]], model_dimension=384)
    assert judge_embeddings([PROBE], batch, expect_dimension=None) == "dimension 2, but the model's config says 384"


def write_st(folder: Path, pooling: dict[str, Any], *, path: str = "1_Pooling", normalize: bool = False) -> None:
    modules = [
        {"type": "sentence_transformers.models.Transformer", "path": ""},
        {"type": "sentence_transformers.models.Pooling", "path": path},
    ]
    if normalize:
        modules.append({"type": "sentence_transformers.models.Normalize", "path": "2_Normalize"})
    (folder / "modules.json").write_text(json.dumps(modules))
    (folder / "1_Pooling").mkdir(exist_ok=True)
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(pooling))


def test_pooling_comes_from_the_sentence_transformers_files(tmp_path: Path) -> None:
    write_st(tmp_path, {"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False}, normalize=True)
    (tmp_path / "sentence_bert_config.json").write_text('{"max_seq_length": 128}')
    pooling = read_pooling(tmp_path, {"model_type": "bert"})
    assert (pooling.mode, pooling.normalize, pooling.max_length, pooling.source) == (
        "cls",
        True,
        128,
        "sentence-transformers",
    )


def test_without_them_the_default_is_mean_or_last_token(tmp_path: Path) -> None:
    assert read_pooling(tmp_path, {"model_type": "bert"}).mode == "mean"
    assert read_pooling(tmp_path, {"model_type": "qwen3"}).mode == "lasttoken"
    with pytest.raises(DeploymentError, match=r"is a causal language model .*not an embedding model"):
        read_pooling(tmp_path, {"model_type": "qwen3", "architectures": ["Qwen3ForCausalLM"]})


def test_the_manifest_pooling_wins_over_the_folder_and_the_default(tmp_path: Path) -> None:
    bare = tmp_path / "bare"  # no sentence-transformers files: bge's card says CLS, then normalize
    bare.mkdir()
    pooling = read_pooling(bare, {"model_type": "bert"}, mode="cls", normalize=True)
    assert (pooling.mode, pooling.normalize, pooling.source) == ("cls", True, "manifest")
    st = tmp_path / "st"  # the folder says mean and 128 tokens: the manifest's mode wins, the length stays
    st.mkdir()
    write_st(st, {"pooling_mode_mean_tokens": True})
    (st / "sentence_bert_config.json").write_text('{"max_seq_length": 128}')
    pooling = read_pooling(st, {"model_type": "bert"}, mode="cls")
    assert (pooling.mode, pooling.normalize, pooling.max_length) == ("cls", False, 128)
    assert read_pooling(st, {"model_type": "bert"}, normalize=True).mode == "mean"  # only normalize set


@pytest.mark.parametrize("path", ["../outside", "/etc"])
def test_a_pooling_path_outside_the_folder_is_refused(tmp_path: Path, path: str) -> None:
    write_st(tmp_path, {"pooling_mode_mean_tokens": True}, path=path)
    with pytest.raises(DeploymentError, match="leaves the model folder"):
        read_pooling(tmp_path, {})


def test_a_pooling_mode_provision_cannot_apply_is_refused(tmp_path: Path) -> None:
    write_st(tmp_path, {"pooling_mode_weightedmean_tokens": True})
    with pytest.raises(DeploymentError, match="sets pooling_mode_weightedmean_tokens; provision pools with"):
        read_pooling(tmp_path, {})
    (tmp_path / "modules.json").write_text("{not json")
    with pytest.raises(DeploymentError, match=r"cannot read modules\.json"):
        read_pooling(tmp_path, {})


def test_short_texts_share_one_pass_and_long_ones_keep_the_old_bound() -> None:
    assert passes([20] * 256, max_length=256, budget=32 * 256) == [list(range(256))]  # 256 x 20 tokens: one pass
    at_limit = passes([300] * 70, max_length=256, budget=32 * 256)  # cut to 256: 32 texts a pass, as before
    assert [len(p) for p in at_limit] == [32, 32, 6]


def test_passes_go_longest_first_and_cover_every_text_once() -> None:
    lengths = [5, 40, 12, 40, 3, 1000]
    groups = passes(lengths, max_length=512, budget=100)
    assert groups == [[5], [1, 3], [2, 0, 4]]  # 1000 alone (over budget even cut); 2 x 40 = 80; 3 x 12 = 36
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    assert passes([], max_length=512, budget=100) == []


def test_a_bert_folder_without_st_files_is_mean_pooled_and_a_lone_pooling_config_still_counts(tmp_path: Path) -> None:
    bert = {"model_type": "bert", "architectures": ["BertModel"]}
    plain = read_pooling(tmp_path, bert)
    assert (plain.mode, plain.normalize, plain.source) == ("mean", False, "default")
    (tmp_path / "1_Pooling").mkdir()  # bge's CLS config, but modules.json left out by an include pattern
    (tmp_path / "1_Pooling" / "config.json").write_text('{"pooling_mode_cls_token": true}')
    lone = read_pooling(tmp_path, bert)
    assert (lone.mode, lone.normalize, lone.source) == ("cls", False, "1_Pooling")


def test_a_manifest_pooling_does_not_read_the_folder_pooling_it_replaces(tmp_path: Path) -> None:
    write_st(tmp_path, {"pooling_mode_weightedmean_tokens": True}, normalize=True)  # a mode provision lacks
    pooling = read_pooling(tmp_path, {"model_type": "bert"}, mode="cls")
    assert (pooling.mode, pooling.normalize, pooling.source) == ("cls", True, "manifest")
    write_st(tmp_path, {"pooling_mode_mean_tokens": True}, path="../outside")  # still refused: hostile
    with pytest.raises(DeploymentError, match="leaves the model folder"):
        read_pooling(tmp_path, {"model_type": "bert"})
