"""Models in memory (a (PreTrainedModel, tokenizer) pair, a SentenceTransformer) are encoded and analysed like
checkpoints; their cache identity is their config + weights + tokenizer, never an object id; and prompts are
prepended, recorded and keyed."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import embedgeom as eg
from embedgeom.loading import CheckpointError

TEXTS = ["the cat sat on the mat", "a dog ran fast", "hello world", "the big red house by the river"]


@pytest.fixture
def bert_pair(tiny_bert_dir):
    from transformers import AutoModel, AutoTokenizer

    return AutoModel.from_pretrained(tiny_bert_dir), AutoTokenizer.from_pretrained(tiny_bert_dir)


def test_a_model_in_memory_gives_the_checkpoints_vectors(bert_pair, tiny_encoder):
    got = eg.encode(bert_pair, TEXTS, poolings="all")
    want = eg.encode(tiny_encoder, TEXTS, poolings="all")
    for k in want.vectors:
        np.testing.assert_allclose(got.vectors[k], want.vectors[k], atol=1e-6)
    enc = eg.load_encoder(bert_pair)
    assert enc.spec.startswith("memory:") and enc.card()["in_memory"] is True and enc.path is None


def test_the_cache_key_comes_from_the_weights_not_the_object(bert_pair, tmp_path):
    model, tok = bert_pair
    cache = str(tmp_path / "c")
    first = eg.encode((model, tok), TEXTS, poolings="mean", cache=cache)
    assert first.meta["cache"]["misses"] == 1
    twin = eg.encode((copy.deepcopy(model), tok), TEXTS, poolings="mean", cache=cache)  # another object, same weights
    assert twin.meta["cache"]["hits"] == 1
    np.testing.assert_array_equal(twin.get("mean"), first.get("mean"))
    with torch.no_grad():
        model.encoder.layer[0].output.dense.weight.mul_(1.5)  # the weights change between two calls
    changed = eg.encode((model, tok), TEXTS, poolings="mean", cache=cache)
    assert changed.meta["cache"]["misses"] == 1
    assert changed.meta["model_hash"] != first.meta["model_hash"]
    assert not np.allclose(changed.get("mean"), first.get("mean"))
    enc = eg.load_encoder((model, tok))  # one encoder, edited in place after loading: a new key too
    before = eg.encode(enc, TEXTS, poolings="mean", cache=cache)
    with torch.no_grad():
        model.embeddings.word_embeddings.weight.add_(0.1)
    after = eg.encode(enc, TEXTS, poolings="mean", cache=cache)
    assert after.meta["cache"]["misses"] == 1 and after.meta["model_hash"] != before.meta["model_hash"]


def test_anything_else_is_refused_in_one_line(bert_pair):
    model, tok = bert_pair
    with pytest.raises(CheckpointError, match=r"^checkpoint: expected a SentenceTransformer or a "
                                              r"\(transformers.PreTrainedModel, tokenizer\) pair in memory, got "
                                              r"BertModel \(pass its tokenizer too: \(model, tokenizer\)\)\.$"):
        eg.load_encoder(model)
    with pytest.raises(CheckpointError, match=r"whose second item is str, not a transformers tokenizer\.$"):
        eg.load_encoder((model, "vocab.txt"))
    with pytest.raises(ValueError, match=r"^encoder: expected an Encoder .* got int\."):
        eg.encode(42, TEXTS)
    with pytest.raises(CheckpointError, match=r"^checkpoint: expected a directory, a hub id, a SentenceTransformer "
                                              r"or a \(PreTrainedModel, tokenizer\) pair, got list\.$"):
        eg.load_encoder([model, tok])


def test_analyze_takes_a_model_in_memory_and_records_the_prompt(bert_pair):
    res = eg.analyze(bert_pair, "sample:polarity", max_texts=20, poolings="mean", probes=False, cache=False,
                     device="cpu", dtype="float32", prompt="query: ")
    assert res.checkpoint["spec"].startswith("memory:")
    assert res.options["prompt"] == "query: "


def test_a_prompt_is_prepended_recorded_and_keyed(tiny_encoder, tmp_path):
    cache = str(tmp_path / "c")
    plain = eg.encode(tiny_encoder, [f"query: {t}" for t in TEXTS], poolings="mean", cache=cache)
    prompted = eg.encode(tiny_encoder, TEXTS, poolings="mean", prompt="query: ", cache=cache)
    np.testing.assert_array_equal(prompted.get("mean"), plain.get("mean"))
    assert prompted.meta["prompt"] == "query: " and plain.meta["prompt"] == ""
    assert prompted.meta["cache"]["misses"] == 1  # other texts and another prompt: another key
    again = eg.encode(tiny_encoder, TEXTS, poolings="mean", prompt="query: ", cache=cache)
    assert again.meta["cache"]["hits"] == 1
    none = eg.encode(tiny_encoder, TEXTS, poolings="mean", cache=cache)
    assert none.meta["cache"]["misses"] == 1 and not np.array_equal(none.get("mean"), prompted.get("mean"))
    with pytest.raises(ValueError, match=r"^prompt: expected a text such as 'query: '"):
        eg.encode(tiny_encoder, TEXTS, prompt=3)


def test_a_declared_prompt_name_and_include_prompt_follow_sentence_transformers(minilm_dir, tmp_path):
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(minilm_dir), device="cpu")
    st.prompts = {"query": "query: the ", "doc": ""}
    st[1].include_prompt = False  # the Pooling module leaves the prompt's tokens out
    want = st.encode(TEXTS, prompt_name="query", convert_to_numpy=True)
    got = eg.encode(st, TEXTS, poolings="native", prompt="query")
    np.testing.assert_allclose(got.get("native"), want, atol=1e-5)
    assert (got.meta["prompt"], got.meta["prompt_name"]) == ("query: the ", "query")
