"""The precision of every vector is known, keyed and never mixed within one result.

The case this pins: an earlier call cached the last layer in bfloat16 (``dtype="auto"``, check passed); a later
call for every layer failed the check and fell back to float32, yet returned the four cached bfloat16 sets inside
a result labelled float32. Now the fallback computes the whole call in float32 and says so.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import embedgeom as eg
import embedgeom.encoding as encoding
from embedgeom.embedding_cache import EmbeddingCache
from embedgeom.encoding import PrecisionWarning

TEXTS = ["the cat sat on the mat", "a dog ran in the park", "hello world", "embedding geometry of text encoders",
         "one two three four five six seven", "the quick brown fox jumps over the lazy dog"]


def _texts(n: int) -> list[str]:
    return [TEXTS[i % len(TEXTS)] + f" {i}" for i in range(n)]


def _auto_bf16(encoder):
    return dataclasses.replace(encoder, compute_dtype=torch.bfloat16, dtype_policy="auto")


def _stored(cache: EmbeddingCache) -> set[str]:
    return {f.name.removesuffix(".npz") for f in cache.root.rglob("*.npz")}


@pytest.mark.parametrize("n", [6, 70])  # 70 > PRECISION_CHECK_TEXTS: the probe is not every text
def test_fallback_after_cached_bfloat16_recomputes_every_set_in_float32(tiny_encoder, tmp_path, monkeypatch, n):
    texts = _texts(n)
    enc = _auto_bf16(tiny_encoder)
    cache = EmbeddingCache(tmp_path / "c")
    last = enc.num_layers
    monkeypatch.setattr(encoding, "PRECISION_TOLERANCE", 1e9)  # the earlier call: bfloat16 passes
    first = eg.encode(enc, texts, poolings="all", layers=-1, cache=cache)
    assert first.meta["compute_dtype"] == "bfloat16" and first.meta["precision_check"]["passed"] is True
    assert set(first.meta["vector_dtypes"].values()) == {"bfloat16"} and len(_stored(cache)) == 4

    monkeypatch.setattr(encoding, "PRECISION_TOLERANCE", 0.0)  # this call: bfloat16 fails
    with pytest.warns(PrecisionWarning, match=r"every vector set of this call is float32 .*4 cached in bfloat16 "
                                              r"not used") as caught:
        got = eg.encode(enc, texts, poolings="all", layers="all", cache=cache)
    assert [w.filename for w in caught if w.category is PrecisionWarning] == [__file__]
    ref = eg.encode(tiny_encoder, texts, poolings="all", layers="all")  # float32, no cache
    assert list(got.vectors) == list(ref.vectors)
    for k in ref.vectors:
        np.testing.assert_array_equal(got.vectors[k], ref.vectors[k], err_msg=str(k))
    # the scenario is real: the cached bfloat16 sets differ from float32
    assert max(float(np.abs(first.vectors[k] - ref.vectors[k]).max()) for k in first.vectors) > 1e-4
    assert got.meta["compute_dtype"] == "float32"
    assert got.meta["vector_dtypes"] == {f"{p}@{lay}": "float32" for p, lay in ref.vectors}
    check = got.meta["precision_check"]
    assert check["passed"] is False and check["used"] == "float32" and check["cached_low_dropped"] == 4
    assert got.meta["cache"]["hits"] == 0 and got.meta["cache"]["misses"] == len(ref.vectors)
    assert ("mean", last) in got.vectors

    # every set is now cached in float32 as well; the next failing call takes them all from there
    assert len(_stored(cache)) == 4 + len(ref.vectors)
    with pytest.warns(PrecisionWarning, match=rf"0 computed in float32, {len(ref.vectors)} from the float32 cache; "
                                              r"4 cached in bfloat16 not used"):
        again = eg.encode(enc, texts, poolings="all", layers="all", cache=cache)
    assert again.meta["cache"]["hits"] == len(ref.vectors) and set(again.meta["vector_dtypes"].values()) == {"float32"}
    for k in ref.vectors:
        np.testing.assert_array_equal(again.vectors[k], ref.vectors[k])


def test_a_passing_check_with_cached_bfloat16_returns_bfloat16_only(tiny_encoder, tmp_path, monkeypatch):
    enc = _auto_bf16(tiny_encoder)
    cache = EmbeddingCache(tmp_path / "c")
    monkeypatch.setattr(encoding, "PRECISION_TOLERANCE", 1e9)
    eg.encode(enc, TEXTS, poolings="all", layers=-1, cache=cache)
    got = eg.encode(enc, TEXTS, poolings="all", layers="all", cache=cache)
    assert got.meta["cache"]["hits"] == 4 and got.meta["compute_dtype"] == "bfloat16"
    assert set(got.meta["vector_dtypes"].values()) == {"bfloat16"}
    fixed = eg.encode(dataclasses.replace(tiny_encoder, compute_dtype=torch.bfloat16), TEXTS, poolings="all",
                      layers="all")
    for k in fixed.vectors:
        np.testing.assert_array_equal(got.vectors[k], fixed.vectors[k], err_msg=str(k))


def test_changing_only_the_precision_is_a_cache_miss(tiny_encoder, tmp_path):
    from embedgeom.embedding_cache import texts_hash
    from embedgeom.pooling import POOLING_VERSION

    cache = EmbeddingCache(tmp_path / "c")
    f32 = eg.encode(tiny_encoder, TEXTS, poolings=("mean",), cache=cache)
    bf16_enc = dataclasses.replace(tiny_encoder, compute_dtype=torch.bfloat16)
    bf16 = eg.encode(bf16_enc, TEXTS, poolings=("mean",), cache=cache)
    assert f32.meta["cache"]["misses"] == 1 and bf16.meta["cache"]["hits"] == 0 and bf16.meta["cache"]["misses"] == 1
    assert not np.array_equal(f32.get("mean"), bf16.get("mean"))
    fields = {"model_hash": tiny_encoder.weights_hash(), "tokenizer_hash": tiny_encoder.tokenizer_hash,
              "texts_hash": texts_hash(TEXTS), "max_length": tiny_encoder.max_length, "special_tokens": "include",
              "pair_mode": "single", "padding_side": "right", "num_layers": tiny_encoder.num_layers, "native": None,
              "custom": None, "precision_checked": False, "float32_matmul": "ieee",
              "pooling_version": POOLING_VERSION, "pooling": "mean", "layer": tiny_encoder.num_layers}
    assert _stored(cache) == {EmbeddingCache.key({**fields, "compute_dtype": d}) for d in ("float32", "bfloat16")}
    # each precision finds its own entry again
    assert eg.encode(tiny_encoder, TEXTS, poolings=("mean",), cache=cache).meta["cache"]["hits"] == 1
    again = eg.encode(bf16_enc, TEXTS, poolings=("mean",), cache=cache)
    assert again.meta["cache"]["hits"] == 1
    np.testing.assert_array_equal(again.get("mean"), bf16.get("mean"))


def test_analysis_records_one_precision_per_vector_set(tiny_encoder, tmp_path, monkeypatch):
    from embedgeom.report import compute_dtype_note

    data = tmp_path / "texts.txt"
    data.write_text("\n".join(_texts(30)) + "\n")
    enc = _auto_bf16(tiny_encoder)
    cache = str(tmp_path / "c")
    monkeypatch.setattr(encoding, "PRECISION_TOLERANCE", 1e9)
    eg.analyze(enc, data=str(data), layers=[-1], cache=cache, probes=False, groups=5, metrics=["uniformity"])
    monkeypatch.setattr(encoding, "PRECISION_TOLERANCE", 0.0)
    with pytest.warns(PrecisionWarning, match="4 cached in bfloat16 not used"):
        res = eg.analyze(enc, data=str(data), layers="all", cache=cache, probes=False, groups=5,
                         metrics=["uniformity"])
    (card,) = res.tasks.values()
    assert card["encode"]["compute_dtype"] == "float32" and card["encode"]["cache"]["hits"] == 0
    assert set(card["encode"]["vector_dtypes"].values()) == {"float32"}
    assert len(card["encode"]["vector_dtypes"]) == 4 * enc.num_layers + 2  # and mean and max at layer 0
    assert compute_dtype_note(res) == "computed in float32 (bfloat16 failed the precision check)"


def test_non_finite_reduced_precision_probe_falls_back_to_float32(tiny_encoder, monkeypatch):
    real = encoding.run_forward

    def overflowing(encoder, request, keys, dtype, progress):
        if dtype != torch.float32:
            raise FloatingPointError("encode: the model produced non-finite mean embeddings (dtype bfloat16)")
        return real(encoder, request, keys, dtype, progress)

    monkeypatch.setattr(encoding, "run_forward", overflowing)
    with pytest.warns(PrecisionWarning, match="non-finite or unbounded error"):
        got = eg.encode(_auto_bf16(tiny_encoder), TEXTS, poolings=("mean",))
    check = got.meta["precision_check"]
    assert check["passed"] is False and check["worst_ratio"] is None and "non-finite" in check["note"]
    monkeypatch.undo()
    np.testing.assert_array_equal(got.get("mean"), eg.encode(tiny_encoder, TEXTS, poolings=("mean",)).get("mean"))


def test_non_finite_float32_output_blames_the_weights_not_the_dtype(tiny_bert_dir):
    enc = eg.load_encoder(tiny_bert_dir, device="cpu", dtype="float32")
    with torch.no_grad():
        enc.model.encoder.layer[0].output.dense.weight[0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match=r"weights are not finite .*encoder\.layer\.0\.output\.dense\.weight"
                                                 r".*Check the checkpoint's weights") as err:
        eg.encode(enc, TEXTS, poolings=("mean",))
    assert "try dtype" not in str(err.value)


def test_float32_overflow_with_finite_weights_says_so(tiny_bert_dir):
    enc = eg.load_encoder(tiny_bert_dir, device="cpu", dtype="float32")
    with torch.no_grad():
        enc.model.embeddings.word_embeddings.weight.fill_(3e38)
    with pytest.raises(FloatingPointError, match="weights are finite but the activations overflow even in float32"
                       ) as err:
        eg.encode(enc, TEXTS, poolings=("mean",))
    assert "try dtype" not in str(err.value)


def test_reduced_precision_non_finite_output_still_suggests_float32(tiny_encoder, monkeypatch):
    from embedgeom import pooling

    monkeypatch.setattr(pooling, "mean_pool", lambda h, m: torch.full((h.shape[0], h.shape[2]), float("inf")))
    with pytest.raises(FloatingPointError, match=r"\(dtype bfloat16\); try dtype='float32'"):
        eg.encode(dataclasses.replace(tiny_encoder, compute_dtype=torch.bfloat16), TEXTS, poolings=("mean",))


def test_float32_matmuls_are_ieee_during_the_forward_and_restored_after(tiny_encoder, monkeypatch):
    from embedgeom._forward import _matmul_backends

    backends = _matmul_backends()
    if not backends:
        pytest.skip("this torch has no per-backend float32 matmul precision")
    seen = []
    real = tiny_encoder.model.forward

    def spy(*args, **kwargs):
        seen.append([b.fp32_precision for b in backends])
        return real(*args, **kwargs)

    monkeypatch.setattr(tiny_encoder.model, "forward", spy)
    torch.set_float32_matmul_precision("medium")  # lets oneDNN use bfloat16, CUDA TF32, for float32 matmuls
    try:
        before = [b.fp32_precision for b in backends]
        assert "ieee" not in before
        emb = eg.encode(tiny_encoder, TEXTS, poolings=("mean",))
        after = [b.fp32_precision for b in backends]
    finally:
        torch.set_float32_matmul_precision("highest")
    assert seen and all(s == ["ieee"] * len(backends) for s in seen)
    assert after == before
    monkeypatch.undo()
    np.testing.assert_array_equal(emb.get("mean"), eg.encode(tiny_encoder, TEXTS, poolings=("mean",)).get("mean"))
