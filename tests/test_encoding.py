"""encode(): one pass, every pooling, padding invariance, references (hand-written, eager attention,
sentence-transformers), pairs, truncation, order, cache, OOM fallback."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import embedgeom as eg
from embedgeom.embedding_cache import EmbeddingCache
from embedgeom.encoding import BatchSizeWarning, TruncationWarning

TEXTS = [
    "the cat sat on the mat",
    "a dog ran",
    "one two three four five six seven eight nine ten and more words than the first one",
    "hello world",
    "the big red car was fast on the long road to the city",
    "sun",
]


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("which", ["tiny_encoder", "minilm"])
def test_alone_equals_inside_a_padded_batch(request, which, side):
    enc = request.getfixturevalue(which)
    batch = eg.encode(enc, TEXTS, poolings="all", layers="all", padding_side=side, batch_size=len(TEXTS))
    for i, t in enumerate(TEXTS):
        alone = eg.encode(enc, [t], poolings="all", layers="all", padding_side=side)
        for key, arr in batch.vectors.items():
            np.testing.assert_allclose(alone.vectors[key][0], arr[i], atol=2e-5, rtol=1e-4, err_msg=str(key))


def _manual_forward(enc, texts):
    tok = enc.tokenizer(texts, padding=True, return_tensors="pt", return_special_tokens_mask=True,
                        truncation=True, max_length=enc.max_length)
    special = tok.pop("special_tokens_mask").bool()
    from transformers import AutoModel

    model = AutoModel.from_pretrained(enc.path, attn_implementation="eager").eval()
    with torch.no_grad():
        out = model(**tok, output_hidden_states=True, output_attentions=True)
    return tok, special, out


def test_mean_cls_max_match_hand_written_pooling_on_minilm(minilm):
    emb = eg.encode(minilm, TEXTS, poolings=("mean", "cls", "max"), layers=(-1, 2))
    tok, _, out = _manual_forward(minilm, TEXTS)
    m = tok["attention_mask"].unsqueeze(-1).float()
    for layer in (-1, 2):
        h = out.hidden_states[layer]
        mean = (h * m).sum(1) / m.sum(1)
        np.testing.assert_allclose(emb.get("mean", layer), mean.numpy(), atol=3e-5)
        np.testing.assert_allclose(emb.get("cls", layer), h[:, 0].numpy(), atol=3e-5)
        mx = torch.stack([h[i, : int(m[i].sum())].amax(0) for i in range(len(TEXTS))])
        np.testing.assert_allclose(emb.get("max", layer), mx.numpy(), atol=3e-5)


def test_attention_pooling_matches_eager_attention_weights(minilm):
    emb = eg.encode(minilm, TEXTS, poolings=("attention",), layers=(-1, 3))
    tok, _, out = _manual_forward(minilm, TEXTS)
    for layer in (-1, 3):
        # hidden_states[l] is the output of layer l, whose attention is attentions[l - 1]
        att = out.attentions[layer if layer < 0 else layer - 1][:, :, 0, :].mean(1)  # first token, head-avg
        att = att * tok["attention_mask"]
        att = att / att.sum(1, keepdim=True)
        want = torch.einsum("bl,bld->bd", att, out.hidden_states[layer])
        np.testing.assert_allclose(emb.get("attention", layer), want.numpy(), atol=3e-5)
    assert emb.meta["attention_source"] == "sdpa-capture"


def test_special_tokens_excluded(minilm):
    emb = eg.encode(minilm, TEXTS, poolings=("mean", "max"), special_tokens="exclude")
    tok, special, out = _manual_forward(minilm, TEXTS)
    m = (tok["attention_mask"].bool() & ~special).unsqueeze(-1).float()
    h = out.hidden_states[-1]
    np.testing.assert_allclose(emb.get("mean"), ((h * m).sum(1) / m.sum(1)).numpy(), atol=3e-5)


def test_native_matches_sentence_transformers(minilm, minilm_dir):
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(minilm_dir), device="cpu")
    ref = st.encode(TEXTS, convert_to_numpy=True, batch_size=4)
    got = eg.encode(minilm, TEXTS, poolings=("native",)).get("native")
    np.testing.assert_allclose(got, ref, atol=2e-6)
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-6)  # Normalize module respected


def test_native_needs_a_declared_pooling(tiny_encoder):
    with pytest.raises(ValueError, match="native"):
        eg.encode(tiny_encoder, TEXTS, poolings=("native",))


def test_order_is_restored_after_length_sorting(tiny_encoder):
    a = eg.encode(tiny_encoder, TEXTS, poolings=("mean",), batch_size=2)
    perm = [3, 0, 5, 2, 1, 4]
    b = eg.encode(tiny_encoder, [TEXTS[i] for i in perm], poolings=("mean",), batch_size=4)
    np.testing.assert_allclose(b.get("mean"), a.get("mean")[perm], atol=1e-5)


def test_layer_indexing(tiny_encoder):
    emb = eg.encode(tiny_encoder, TEXTS, poolings=("mean",), layers="all")
    assert emb.layers == (0, 1, 2) and emb.num_layers == 2
    np.testing.assert_array_equal(emb.get("mean", -1), emb.get("mean", 2))
    np.testing.assert_array_equal(emb.get("mean", -3), emb.get("mean", 0))
    with pytest.raises(ValueError, match="layers"):
        eg.encode(tiny_encoder, TEXTS, layers=(5,))


def test_text_pairs_use_the_tokenizers_pair_template(minilm):
    a, b = TEXTS[:3], TEXTS[3:]
    emb = eg.encode(minilm, a, text_pairs=b, poolings=("mean", "cls"))
    tok = minilm.tokenizer(a, b, padding=True, return_tensors="pt")
    assert (tok["token_type_ids"] == 1).any()
    with torch.no_grad():
        h = minilm.model(**tok).last_hidden_state
    m = tok["attention_mask"].unsqueeze(-1).float()
    np.testing.assert_allclose(emb.get("mean"), ((h * m).sum(1) / m.sum(1)).numpy(), atol=3e-5)
    assert emb.meta["pair_mode"] == "joined"


def test_truncation_is_counted_and_warned_once(tiny_encoder):
    long = " ".join(["word"] * 200)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        emb = eg.encode(tiny_encoder, [long, long, "short text"], poolings=("mean",), max_length=16)
    trunc = [w for w in caught if issubclass(w.category, TruncationWarning)]
    assert len(trunc) == 1 and "2 of 3" in str(trunc[0].message)
    assert emb.meta["truncated"] == 2 and emb.meta["max_length"] == 16


def test_bad_inputs(tiny_encoder):
    with pytest.raises(ValueError, match="at least one text"):
        eg.encode(tiny_encoder, [])
    with pytest.raises(ValueError, match="list of strings"):
        eg.encode(tiny_encoder, 42)
    with pytest.raises(ValueError, match="index 1"):
        eg.encode(tiny_encoder, ["ok", 3])
    with pytest.raises(ValueError, match=r"tokenise to nothing \(first: 1"):
        eg.encode(tiny_encoder, ["fine", "   "])
    with pytest.raises(ValueError, match="poolings"):
        eg.encode(tiny_encoder, ["a"], poolings=("median",))
    with pytest.raises(ValueError, match="text_pairs"):
        eg.encode(tiny_encoder, ["a", "b"], text_pairs=["c"])


def test_single_string_is_one_text(tiny_encoder):
    one = eg.encode(tiny_encoder, "just one string", poolings=("mean",))
    many = eg.encode(tiny_encoder, ["just one string", "and another"], poolings=("mean",))
    assert one.n == 1 and one.get("mean").shape == (1, many.get("mean").shape[1])
    np.testing.assert_allclose(one.get("mean")[0], many.get("mean")[0], rtol=1e-5, atol=1e-6)


def test_cache_hit_miss_and_corruption(tiny_encoder, tmp_path, monkeypatch):
    cache = EmbeddingCache(tmp_path / "cache")
    first = eg.encode(tiny_encoder, TEXTS, poolings=("mean", "max"), cache=cache)
    assert first.meta["cache"] == {"hits": 0, "misses": 2, "dir": str(cache.root)}

    def boom(*a, **k):
        raise AssertionError("the model must not run on a full cache hit")

    monkeypatch.setattr(tiny_encoder.model, "forward", boom)
    again = eg.encode(tiny_encoder, TEXTS, poolings=("max", "mean"), cache=cache)
    assert again.meta["cache"]["hits"] == 2
    np.testing.assert_array_equal(again.get("max"), first.get("max"))
    monkeypatch.undo()
    # corrupt one file: it is detected, removed and recomputed
    files = sorted(cache.root.rglob("*.npz"))
    assert len(files) == 2
    files[0].write_bytes(b"not an npz file")
    third = eg.encode(tiny_encoder, TEXTS, poolings=("mean", "max"), cache=cache)
    assert third.meta["cache"]["misses"] == 1
    np.testing.assert_allclose(third.get("mean"), first.get("mean"), atol=1e-6)
    # other texts are a miss
    other = eg.encode(tiny_encoder, TEXTS[:3], poolings=("mean",), cache=cache)
    assert other.meta["cache"]["misses"] == 1


def test_out_of_memory_halves_the_batch(tiny_encoder, monkeypatch):
    real = tiny_encoder.model.forward

    def picky(*args, **kwargs):
        if kwargs["input_ids"].shape[0] > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(*args, **kwargs)

    monkeypatch.setattr(tiny_encoder.model, "forward", picky)
    with pytest.warns(BatchSizeWarning, match="halved"):
        emb = eg.encode(tiny_encoder, TEXTS, poolings=("mean",), batch_size=8)
    monkeypatch.undo()
    assert emb.meta["batch_size_final"] == 2 and emb.meta["oom_halvings"] == 2
    np.testing.assert_allclose(emb.get("mean"), eg.encode(tiny_encoder, TEXTS, poolings=("mean",)).get("mean"),
                               atol=1e-5)


def test_progress_callback_and_meta(tiny_encoder):
    seen = []
    emb = eg.encode(tiny_encoder, TEXTS, poolings=("cls",), batch_size=4, progress=lambda d, t: seen.append((d, t)))
    assert seen[-1] == (6, 6) and len(seen) == 2
    for key in ("model_hash", "texts_hash", "compute_dtype", "max_length", "truncated", "special_tokens"):
        assert key in emb.meta
    assert emb.get("cls").dtype == np.float32


def test_reduced_precision_autocast_stays_close_to_float32(minilm_dir, minilm):
    bf16 = eg.load_encoder(minilm_dir, device="cpu", dtype="bfloat16")
    a = eg.encode(minilm, TEXTS, poolings="all")
    b = eg.encode(bf16, TEXTS, poolings="all")
    assert b.meta["compute_dtype"] == "bfloat16" and a.meta["compute_dtype"] == "float32"
    for key in a.vectors:
        x, y = a.vectors[key], b.vectors[key]
        assert y.dtype == np.float32
        cos = (x * y).sum(1) / np.linalg.norm(x, axis=1) / np.linalg.norm(y, axis=1)
        assert cos.min() > 0.999, key


def test_concurrent_cache_writers_leave_one_valid_file(tmp_path):
    import threading

    cache = EmbeddingCache(tmp_path / "c")
    arr = np.random.default_rng(0).standard_normal((50, 8)).astype(np.float32)
    key = EmbeddingCache.key({"k": 1})
    errors = []

    def write():
        try:
            for _ in range(20):
                cache.put(key, arr, {"who": threading.get_ident()})
        except Exception as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=write) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    np.testing.assert_array_equal(cache.get(key), arr)
    assert len(list((tmp_path / "c").rglob("*.npz"))) == 1  # no stray temporary files


# --- the cache key: its fields, spelled out, so that no refactor silently orphans existing caches --------------

#: sha256 of the JSON of the fields below (with the cache's format version): existing caches are found under it.
#: Format 3 (was 2cdd4993... under format 2): the float32 matmul precision entered the key, so entries that may hold
#: TF32 or bfloat16 matmuls from before float32 was pinned to IEEE are never read.
PINNED_KEY = "4a2620ffb04171b1b915a443c53ee88bcb196db173589dd1dab094f98692d331"
#: The same fields for a bfloat16 vector that ``auto`` checked: the precision alone changes the key.
PINNED_KEY_BF16 = "3b04d6679596662435e589b3255b998838c5b7d495469a1d53d4e8fd5edd6964"


def test_cache_key_serialisation_is_pinned():
    fields = {"model_hash": "m", "tokenizer_hash": "t", "texts_hash": "x", "max_length": 16, "compute_dtype": "float32",
              "special_tokens": "include", "pair_mode": "single", "padding_side": "right", "pooling": "mean",
              "layer": 2, "num_layers": 2, "native": None, "custom": None, "precision_checked": False,
              "float32_matmul": "ieee", "pooling_version": 1}
    assert EmbeddingCache.key(fields) == PINNED_KEY
    assert EmbeddingCache.key({**fields, "compute_dtype": "bfloat16", "precision_checked": True}) == PINNED_KEY_BF16


def _stored_keys(cache: EmbeddingCache) -> set[str]:
    return {f.name.removesuffix(".npz") for f in cache.root.rglob("*.npz")}


def _key_fields(enc, texts, pairs=None, **over):
    from embedgeom.embedding_cache import texts_hash
    from embedgeom.pooling import POOLING_VERSION

    return {"model_hash": enc.weights_hash(), "tokenizer_hash": enc.tokenizer_hash,
            "texts_hash": texts_hash(texts, pairs), "max_length": enc.max_length, "compute_dtype": "float32",
            "special_tokens": "include", "pair_mode": "single" if pairs is None else "joined",
            "padding_side": "right", "num_layers": enc.num_layers, "native": None, "custom": None,
            "precision_checked": False, "float32_matmul": "ieee", "pooling_version": POOLING_VERSION, **over}


def test_cache_key_fields_for_every_option_are_pinned(tiny_encoder, tmp_path):
    class Pool:
        fingerprint = "pinned-custom-v1"

        def __call__(self, hidden, mask):
            return hidden.mean(dim=1)

    cache = EmbeddingCache(tmp_path / "c")
    texts, pairs = TEXTS[:3], ["x y", "z", "the cat"]
    with pytest.warns(TruncationWarning) as caught:
        eg.encode(tiny_encoder, texts, text_pairs=pairs, poolings=("mean", "cls", "mine"), layers=(0, -1),
                  max_length=16, special_tokens="exclude", padding_side="left", cache=cache,
                  custom_poolers={"mine": Pool()})
    assert [w.filename for w in caught] == [__file__]  # the warning points at the caller of encode
    last = tiny_encoder.num_layers
    common = _key_fields(tiny_encoder, texts, pairs, max_length=16, special_tokens="exclude", padding_side="left")
    wanted = [("mean", 0), ("mine", 0), ("mean", last), ("cls", last), ("mine", last)]
    custom = {"mine": "pinned-custom-v1"}
    assert _stored_keys(cache) == {
        EmbeddingCache.key({**common, "pooling": p, "layer": lay, "custom": custom.get(p)}) for p, lay in wanted}


def test_cache_key_fields_for_native_and_checked_reduced_precision_are_pinned(tiny_bert_dir, tmp_path):
    import json
    import shutil

    st_dir = tmp_path / "st"
    shutil.copytree(tiny_bert_dir, st_dir)
    (st_dir / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]))
    (st_dir / "1_Pooling").mkdir()
    (st_dir / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 32,
                                                                  "pooling_mode_mean_tokens": True}))
    enc = _auto(eg.load_encoder(st_dir, device="cpu", dtype="float32"))
    assert enc.native is not None
    cache = EmbeddingCache(tmp_path / "c")
    emb = eg.encode(enc, TEXTS, poolings=("native", "max"), cache=cache)
    assert emb.meta["precision_check"]["passed"] is True and emb.meta["compute_dtype"] == "bfloat16"
    common = _key_fields(enc, TEXTS, compute_dtype="bfloat16", precision_checked=True)
    last = enc.num_layers
    assert _stored_keys(cache) == {
        EmbeddingCache.key({**common, "pooling": "native", "layer": last, "native": enc.native.fingerprint(),
                            "pooler_version": 2}),  # 2: sentence-transformers' concatenation order
        EmbeddingCache.key({**common, "pooling": "max", "layer": last})}


# --- dtype="auto": reduced precision is verified on a probe of the texts, float32 when it is not accurate ---

WORDS = ("the cat dog sat ran on a mat road city car red big fast long world sun one two three four five six "
         "seven eight nine ten words hello and more than first").split()


def _many_texts(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(3, 12)))) for _ in range(n)]


@pytest.fixture(scope="module")
def anisotropic_dir(tmp_path_factory):
    """A tiny BERT whose last layer adds a large shared vector to every token (as in briefly trained encoders,
    whose vectors are one big common component plus a small residual): bfloat16 rounding of that component
    is larger than the residual."""
    from transformers import BertModel

    from tests.fixtures import make_tiny_bert

    d = make_tiny_bert(tmp_path_factory.mktemp("anisotropic"))
    model = BertModel.from_pretrained(d)
    with torch.no_grad():
        g = torch.Generator().manual_seed(3)
        model.encoder.layer[-1].output.dense.bias.copy_(300.0 * torch.randn(model.config.hidden_size, generator=g))
    model.save_pretrained(d, safe_serialization=True)
    return d


def _auto(encoder, dtype=torch.bfloat16):
    import dataclasses

    return dataclasses.replace(encoder, compute_dtype=dtype, dtype_policy="auto")


def _rel_err(a: np.ndarray, b: np.ndarray) -> float:
    """median per-text error relative to the median spread of b about its mean"""
    return float(np.median(np.linalg.norm(a - b, axis=1)) / np.median(np.linalg.norm(b - b.mean(0), axis=1)))


@pytest.mark.parametrize("n", [20, 150])
def test_auto_dtype_falls_back_to_float32_where_bfloat16_loses_the_signal(anisotropic_dir, n):
    texts = _many_texts(n)
    f32 = eg.load_encoder(anisotropic_dir, device="cpu", dtype="float32")
    bf16 = eg.load_encoder(anisotropic_dir, device="cpu", dtype="bfloat16")
    ref = eg.encode(f32, texts, poolings=("mean", "max", "cls"))
    fixed = eg.encode(bf16, texts, poolings=("mean", "max", "cls"))
    # the model really is a case where bfloat16 fails: its error exceeds the spread the metrics measure
    assert max(_rel_err(fixed.vectors[k], ref.vectors[k]) for k in ref.vectors) > 0.1
    got = eg.encode(_auto(bf16), texts, poolings=("mean", "max", "cls"))
    check = got.meta["precision_check"]
    assert got.meta["compute_dtype"] == "float32"
    assert check["passed"] is False and check["used"] == "float32" and check["dtype"] == "bfloat16"
    assert check["texts"] == min(n, 64) and check["worst_ratio"] > check["tolerance"]
    for k in ref.vectors:
        np.testing.assert_allclose(got.vectors[k], ref.vectors[k], rtol=1e-5, atol=1e-5)


def test_auto_dtype_keeps_bfloat16_where_it_is_accurate(minilm_dir, tmp_path):
    texts = _many_texts(80, seed=1)
    bf16 = eg.load_encoder(minilm_dir, device="cpu", dtype="bfloat16")
    fixed = eg.encode(bf16, texts, poolings=("mean", "max"))
    got = eg.encode(_auto(bf16), texts, poolings=("mean", "max"), cache=tmp_path)
    check = got.meta["precision_check"]
    assert got.meta["compute_dtype"] == "bfloat16" and check["passed"] is True and check["used"] == "bfloat16"
    assert 0 < check["worst_ratio"] <= check["tolerance"]
    for k in fixed.vectors:  # the full pass is the same bfloat16 computation a fixed bfloat16 encoder does
        np.testing.assert_array_equal(got.vectors[k], fixed.vectors[k])
    again = eg.encode(_auto(bf16), texts, poolings=("mean", "max"), cache=tmp_path)
    assert again.meta["cache"]["hits"] == 2 and again.meta["precision_check"]["from_cache"] is True
    np.testing.assert_array_equal(again.get("max"), got.get("max"))


def test_auto_dtype_check_is_skipped_for_float32_and_fixed_dtypes(tiny_encoder, minilm_dir):
    assert eg.encode(_auto(tiny_encoder, torch.float32), TEXTS, poolings=("mean",)).meta["precision_check"] is None
    bf16 = eg.load_encoder(minilm_dir, device="cpu", dtype="bfloat16")
    assert bf16.dtype_policy == "fixed" and bf16.card()["dtype_policy"] == "fixed"
    assert eg.encode(bf16, TEXTS, poolings=("mean",)).meta["precision_check"] is None


def test_auto_dtype_fallback_is_cached_under_float32(anisotropic_dir, tmp_path, monkeypatch):
    texts = _many_texts(100, seed=2)
    enc = _auto(eg.load_encoder(anisotropic_dir, device="cpu", dtype="bfloat16"))
    first = eg.encode(enc, texts, poolings=("mean",), cache=tmp_path)
    assert first.meta["cache"]["misses"] == 1 and first.meta["compute_dtype"] == "float32"
    # a float32 encoder finds the same entry: it was stored under the dtype actually used
    f32 = eg.load_encoder(anisotropic_dir, device="cpu", dtype="float32")
    monkeypatch.setattr(f32.model, "forward", lambda *a, **k: (_ for _ in ()).throw(AssertionError("recomputed")))
    again = eg.encode(f32, texts, poolings=("mean",), cache=tmp_path)
    assert again.meta["cache"]["hits"] == 1
    np.testing.assert_array_equal(again.get("mean"), first.get("mean"))


def test_auto_dtype_never_reuses_unchecked_reduced_precision_cache_entries(anisotropic_dir, tmp_path):
    texts = _many_texts(100, seed=4)
    bf16 = eg.load_encoder(anisotropic_dir, device="cpu", dtype="bfloat16")
    stale = eg.encode(bf16, texts, poolings=("mean",), cache=tmp_path)  # fixed bf16: stored unchecked
    assert stale.meta["cache"]["misses"] == 1
    got = eg.encode(_auto(bf16), texts, poolings=("mean",), cache=tmp_path)
    assert got.meta["cache"]["hits"] == 0 and got.meta["compute_dtype"] == "float32"
    ref = eg.encode(eg.load_encoder(anisotropic_dir, device="cpu", dtype="float32"), texts, poolings=("mean",))
    np.testing.assert_allclose(got.get("mean"), ref.get("mean"), rtol=1e-5, atol=1e-5)


def test_vectors_from_the_cache_still_count_and_warn_about_truncation(tiny_encoder, tmp_path):
    from embedgeom.encoding import TruncationWarning

    texts = ["a short text", " ".join(["word"] * 200), " ".join(["other"] * 150)]
    runs = []
    for _ in range(2):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            emb = eg.encode(tiny_encoder, texts, poolings=("mean",), cache=tmp_path, max_length=32)
        runs.append((emb.meta, [w for w in caught if issubclass(w.category, TruncationWarning)]))
    (first, warned_first), (second, warned_second) = runs
    assert first["cache"]["misses"] == 1 and second["cache"]["hits"] == 1
    assert first["truncated"] == second["truncated"] == 2
    assert len(warned_first) == len(warned_second) == 1
    assert "2 of 3 texts were longer than max_length=32 tokens" in str(warned_second[0].message)
