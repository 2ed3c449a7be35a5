"""The pooler registry and the forward pass's sinks, end to end: a registered pooler is encoded like a built-in and
matches a hand computation from Hugging Face hidden states; refusals are one line naming the poolers that apply;
the built-ins give the vectors of the old if-chain bit for bit and keep their cache keys; a test-only sink sees the
token states a plain Hugging Face forward pass computes."""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import pytest
import torch

import embedgeom as eg
from embedgeom import pooling as P
from embedgeom.embedding_cache import EmbeddingCache, texts_hash
from embedgeom.encoding import PooledSink, Sink, TokenBatch, forward_to_sinks
from embedgeom.pooling import attention_pool, cls_pool, max_pool, mean_pool, native_pool

TEXTS = [
    "the cat sat on the mat",
    "a dog ran",
    "one two three four five six seven eight nine ten and more words than the first one",
    "hello world",
    "the big red car was fast on the long road to the city",
    "sun",
]


def first_last(x: P.PoolInput) -> torch.Tensor:
    """Mean of the first and the last real token's states (left or right padding)."""
    m = x.attention_mask
    first = m.to(torch.int8).argmax(dim=1)
    last = m.shape[1] - 1 - m.flip(1).to(torch.int8).argmax(dim=1)
    rows = torch.arange(m.shape[0], device=m.device)
    h = x.hidden.to(torch.float32)
    return (h[rows, first] + h[rows, last]) / 2


FIRST_LAST = {"definition": "mean of the first and the last real token's hidden states"}


@functools.cache
def _hf_model(path):
    from transformers import AutoModel

    return AutoModel.from_pretrained(path, attn_implementation="eager").eval()


def _hf_alone(enc, text, layer):
    """A plain Hugging Face forward pass of one text, unpadded, eager attention: (hidden states of ``layer``,
    the last layer's head-averaged attention of the first token, input ids, special-token mask)."""
    model = _hf_model(enc.path)
    tok = enc.tokenizer(text, return_tensors="pt", return_special_tokens_mask=True)
    special = tok.pop("special_tokens_mask")[0].bool()
    with torch.no_grad():
        out = model(**tok, output_hidden_states=True, output_attentions=True)
    return out.hidden_states[layer][0], out.attentions[-1][0, :, 0].mean(0), tok["input_ids"][0], special


@pytest.mark.parametrize("side", ["right", "left"])
def test_a_registered_pooler_is_encoded_from_the_models_hidden_states(minilm, side):
    with P.registered_pooler("first_last", first_last, **FIRST_LAST):
        assert "first_last" in P.pooler_names() and "first_last" in P.pooler_names("encoder", include_native=False)
        assert "first_last" in P.POOLINGS and "first_last" in P.ALL_POOLINGS
        emb = eg.encode(minilm, TEXTS, poolings=("first_last",), layers=(2, -1), padding_side=side, batch_size=4)
    for layer in (2, -1):
        want = np.stack([((h := _hf_alone(minilm, t, layer)[0])[0] + h[-1]).numpy() / 2 for t in TEXTS])
        np.testing.assert_allclose(emb.get("first_last", layer), want, atol=3e-5)
    assert "first_last" not in P.pooler_names()  # unregistered with its block
    with pytest.raises(ValueError, match="first_last"):
        eg.encode(minilm, TEXTS, poolings=("first_last",))


def test_all_includes_registered_poolers_and_never_native(minilm, tiny_encoder):
    assert eg.encode(minilm, TEXTS[:2], poolings="all").poolings == ("mean", "cls", "max", "attention")
    with P.registered_pooler("first_last", first_last, **FIRST_LAST):
        got = eg.encode(tiny_encoder, TEXTS, poolings="all")
        assert got.poolings == ("mean", "cls", "max", "attention", "first_last")
        np.testing.assert_array_equal(got.get("first_last"),
                                      eg.encode(tiny_encoder, TEXTS, poolings=("first_last",)).get("first_last"))
    assert eg.encode(tiny_encoder, TEXTS, poolings="all").poolings == ("mean", "cls", "max", "attention")


def test_register_pooler_as_a_decorator(tiny_encoder):
    @P.register_pooler("second_token", definition="hidden state of the second position", layers="transformer")
    def second(x):
        return x.hidden[:, 1].to(torch.float32)

    try:
        emb = eg.encode(tiny_encoder, TEXTS, poolings=("second_token", "mean"), layers="all")
        assert ("second_token", 0) not in emb.vectors and ("mean", 0) in emb.vectors  # its layer rule
        assert emb.get("second_token").shape == emb.get("mean").shape
        with pytest.raises(ValueError, match=r"layers: no requested pooling is defined at layer\(s\) 0: "
                                             r"second_token needs a transformer layer"):
            eg.encode(tiny_encoder, TEXTS, poolings=("second_token",), layers=(0,))
    finally:
        P.unregister_pooler("second_token")


def test_a_pooler_for_another_model_kind_is_refused_in_one_line(tiny_encoder, minilm):
    with pytest.raises(ValueError) as err:
        eg.encode(tiny_encoder, TEXTS, poolings=("mean", "last"))
    msg = str(err.value)
    assert "\n" not in msg
    assert msg == ("poolings: 'last' applies to decoder models, not to this encoder model; poolings that apply: "
                   "mean, cls, max, attention.")
    with pytest.raises(ValueError, match=r"poolings that apply: mean, cls, max, attention, native\.$"):
        eg.encode(minilm, TEXTS, poolings="last")  # a sentence-transformers checkpoint: native applies too
    with pytest.raises(ValueError, match=r"^poolings: 'cls' applies to encoder models, not to this decoder "
                                         r"model; poolings that apply: mean, max, native, last\.$"):
        P.resolve_poolings(("last", "cls"), kind="decoder")
    with pytest.raises(ValueError, match=r"^poolings: 'attention' applies to encoder models, not to this decoder "
                                         r"model; poolings that apply: mean, max, last\.$"):
        P.resolve_poolings(("attention",), kind="decoder", declared=False)
    with pytest.raises(ValueError, match=r"^poolings: expected names from mean, cls, max, attention or 'all', got "
                                         r"'first_last'\.$"):
        eg.encode(tiny_encoder, TEXTS, poolings=("first_last",))


def test_native_needs_a_declaration_and_custom_names_stay_apart(tiny_encoder):
    with pytest.raises(ValueError, match=r"'native' needs a checkpoint that declares its pooling.*Use mean, cls, "
                                         r"max, attention\."):
        eg.encode(tiny_encoder, TEXTS, poolings=("native",))

    class Mine:
        fingerprint = "m1"

        def __call__(self, hidden, mask):
            return hidden.mean(dim=1)

    with pytest.raises(ValueError, match="custom_poolers: expected names that are not registered poolers, got 'max'"):
        eg.encode(tiny_encoder, TEXTS, poolings=("max",), custom_poolers={"max": Mine()})


# --- the built-ins: the old if-chain's vectors, bit for bit, and today's cache keys -----------------------------


class IfChainSink:
    """The pooling dispatch as it was before the registry (an if-chain over the names), fed the same batches."""

    def __init__(self, n, keys, native):
        self.n, self.keys, self.native = n, keys, native
        self.layers = {lay for _, lay in keys}
        self.attention_layers = {lay for p, lay in keys if p == "attention"}
        self.out = {}

    def accept(self, b: TokenBatch) -> None:
        for p, lay in self.keys:
            h = b.hidden[lay]
            if p == "mean":
                v = mean_pool(h, b.pool_mask)
            elif p == "max":
                v = max_pool(h, b.pool_mask)
            elif p == "cls":
                v = cls_pool(h, b.attention_mask)
            elif p == "attention":
                v = attention_pool(h, b.attention_rows[lay], b.pool_mask)
            else:
                v = native_pool(self.native, h, b.attention_mask)
            self.out.setdefault((p, lay), np.empty((self.n, v.shape[1]), np.float32))[b.rows] = v.numpy()

    def finish(self):
        return self.out


@pytest.mark.parametrize(("special", "side"), [("include", "right"), ("exclude", "left")])
def test_builtin_poolers_give_the_if_chains_vectors_bit_for_bit(minilm, special, side):
    L = minilm.num_layers
    keys = [(p, lay) for lay in (0, 3, L) for p in ("mean", "cls", "max", "attention") if lay or p in ("mean", "max")]
    keys.append(("native", L))
    pooled = PooledSink(len(TEXTS), keys, {p: P.get_pooler(p) for p, _ in keys}, minilm.native)
    chain = IfChainSink(len(TEXTS), keys, minilm.native)
    (got, old), meta = forward_to_sinks(minilm, TEXTS, [pooled, chain], batch_size=4, special_tokens=special,
                                        padding_side=side)
    assert set(got) == set(old) == set(keys) and meta["attention_source"] == "sdpa-capture"
    for k in keys:
        np.testing.assert_array_equal(got[k], old[k], err_msg=str(k))
    emb = eg.encode(minilm, TEXTS, poolings=("mean", "cls", "max", "attention", "native"), layers=(0, 3, -1),
                    batch_size=4, special_tokens=special, padding_side=side)
    assert sorted(emb.vectors) == sorted(keys)
    for k in keys:  # encode() is this same pass
        np.testing.assert_array_equal(emb.vectors[k], got[k], err_msg=str(k))


def _fields(enc, texts, **over):
    from embedgeom.pooling import POOLING_VERSION

    return {"model_hash": enc.weights_hash(), "tokenizer_hash": enc.tokenizer_hash, "texts_hash": texts_hash(texts),
            "max_length": enc.max_length, "compute_dtype": "float32", "special_tokens": "include",
            "pair_mode": "single", "padding_side": "right", "num_layers": enc.num_layers, "native": None,
            "custom": None, "precision_checked": False, "float32_matmul": "ieee", "pooling_version": POOLING_VERSION,
            "layer": enc.num_layers, **over}


def _stored(cache):
    return {f.name.removesuffix(".npz") for f in cache.root.rglob("*.npz")}


def test_cache_keys_of_builtins_are_unchanged_and_a_poolers_version_enters_its_key(tiny_encoder, tmp_path):
    cache = EmbeddingCache(tmp_path / "a")
    eg.encode(tiny_encoder, TEXTS, poolings=("mean", "cls", "max", "attention"), cache=cache)
    assert _stored(cache) == {EmbeddingCache.key(_fields(tiny_encoder, TEXTS, pooling=p))
                              for p in ("mean", "cls", "max", "attention")}  # the fields and values of before
    keys = {}
    for version in (1, 2):
        cache = EmbeddingCache(tmp_path / f"v{version}")
        with P.registered_pooler("first_last", first_last, version=version, **FIRST_LAST):
            eg.encode(tiny_encoder, TEXTS, poolings=("first_last",), cache=cache)
        (keys[version],) = _stored(cache)
    assert keys[1] == EmbeddingCache.key(_fields(tiny_encoder, TEXTS, pooling="first_last"))
    assert keys[2] == EmbeddingCache.key(_fields(tiny_encoder, TEXTS, pooling="first_last", pooler_version=2))


def test_non_finite_vectors_of_a_pooler_in_reduced_precision_suggest_float32(tiny_encoder, monkeypatch):
    def overflow(x):
        return torch.full((x.hidden.shape[0], x.hidden.shape[2]), float("inf"))

    bf16 = dataclasses.replace(tiny_encoder, compute_dtype=torch.bfloat16)
    with P.registered_pooler("overflow", overflow, definition="always infinite"), \
            pytest.raises(FloatingPointError, match=r"non-finite overflow embeddings .*\(dtype bfloat16\); try "
                                                    r"dtype='float32'"):
        eg.encode(bf16, TEXTS, poolings=("overflow",))
    # the built-in mean looks its function up when called: a patched one is used
    monkeypatch.setattr(P, "mean_pool", lambda h, m: torch.full((h.shape[0], h.shape[2]), float("inf")))
    with pytest.raises(FloatingPointError, match=r"\(dtype bfloat16\); try dtype='float32'"):
        eg.encode(bf16, TEXTS, poolings=("mean",))


# --- a sink of token states: what a plain Hugging Face forward pass computes ------------------------------------


class TokenStatsSink:
    """Per text: its token ids, the number of real and of non-special tokens, the mean (float64) of its
    non-special token states at ``layer``, and the first token's attention row at ``attention_layer``."""

    def __init__(self, n: int, layer: int, attention_layer: int) -> None:
        self.layer, self.att = layer, attention_layer
        self.layers, self.attention_layers = (layer,), (attention_layer,)
        self.ids: list = [None] * n
        self.real = np.zeros(n, dtype=int)
        self.content = np.zeros(n, dtype=int)
        self.mean: list = [None] * n
        self.attention: list = [None] * n
        self.seen: list[int] = []

    def accept(self, b: TokenBatch) -> None:
        keep = b.attention_mask & ~b.special_mask
        h = b.hidden[self.layer].double()
        for r, i in enumerate(b.rows.tolist()):
            self.seen.append(i)
            real = b.attention_mask[r]
            self.ids[i] = b.input_ids[r][real].tolist()
            self.real[i], self.content[i] = int(real.sum()), int(keep[r].sum())
            self.mean[i] = h[r][keep[r]].mean(0).numpy()
            self.attention[i] = b.attention_rows[self.att][r][real].numpy()

    def finish(self) -> dict:
        return {"ids": self.ids, "real": self.real, "content": self.content, "mean": np.stack(self.mean),
                "attention": self.attention, "seen": sorted(self.seen)}


@pytest.mark.parametrize("side", ["right", "left"])
def test_a_token_sink_sees_what_a_plain_hugging_face_forward_computes(minilm, side):
    layer = 3
    sink = TokenStatsSink(len(TEXTS), layer, minilm.num_layers)
    assert isinstance(sink, Sink)
    seen = []
    (got,), meta = forward_to_sinks(minilm, TEXTS, [sink], batch_size=4, padding_side=side,
                                    progress=lambda d, t: seen.append((d, t)))
    assert got["seen"] == list(range(len(TEXTS)))  # every text once
    assert seen[-1] == (6, 6) and meta["n_tokens"] == int(got["real"].sum()) and meta["compute_dtype"] == "float32"
    for i, t in enumerate(TEXTS):
        h, att, ids, special = _hf_alone(minilm, t, layer)
        assert got["ids"][i] == ids.tolist()
        assert got["real"][i] == len(ids) and got["content"][i] == int((~special).sum())
        np.testing.assert_allclose(got["mean"][i], h[~special].double().mean(0).numpy(), atol=3e-5)
        np.testing.assert_allclose(got["attention"][i], att.numpy(), atol=3e-6)


def test_forward_to_sinks_checks_its_sinks(tiny_encoder):
    with pytest.raises(ValueError, match="sinks: expected a list of sinks"):
        forward_to_sinks(tiny_encoder, TEXTS, TokenStatsSink(6, 1, 1))
    with pytest.raises(ValueError, match=r"sinks: expected hidden-state indices in \[0, 2\]"):
        forward_to_sinks(tiny_encoder, TEXTS, [TokenStatsSink(6, 5, 1)])
    with pytest.raises(ValueError, match="sinks: expected at least one sink"):
        forward_to_sinks(tiny_encoder, TEXTS, [])
