"""The reference protocol (embedgeom.reference.paper) against closed forms, brute force and hand computations."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from embedgeom.reference.paper import (
    PAPER_METRICS,
    PAPER_POOLINGS,
    ReferenceAttentionHead,
    analyze_paper_task,
    class_conditional_alignment,
    class_distances,
    effective_rank_of,
    paper_classes,
    paper_embed,
    paper_items,
    paper_metrics,
    paper_pool,
    paper_separator,
    paper_spectrum,
    paper_tokenize,
    paper_uniformity,
    rank_at_explained,
    spectral_entropy_of,
    stable_rank_of,
    uniformity_subset,
)


@pytest.fixture(scope="module")
def tiny128(tmp_path_factory):
    """A tiny random BERT with 128 positions (the reference pads every item to 128 tokens)."""
    import embedgeom as eg
    from tests.fixtures import make_tiny_bert

    return eg.load_encoder(make_tiny_bert(tmp_path_factory.mktemp("tiny-bert-128"), max_positions=128),
                           device="cpu", dtype="float32")


@pytest.fixture
def glue_dir(tmp_path):
    root = tmp_path / "glue"
    (root / "SST-2").mkdir(parents=True)
    (root / "SST-2" / "dev.tsv").write_text("sentence\tlabel\nthe film was good .\t1\nbad film .\t0\n"
                                            "the film was good .\t1\na long day .\t0\nthe end .\t1\n")
    (root / "STS-B").mkdir()
    (root / "STS-B" / "dev.tsv").write_text(
        "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
        "0\tx\tx\tx\t0\tnone\tnone\tthe cat sat .\tthe cat sat on the mat .\t4.0\n"
        "1\tx\tx\tx\t1\tnone\tnone\ta dog ran .\tthe sun is high .\t1.0\n"
        "2\tx\tx\tx\t2\tnone\tnone\tthe cat sat .\tthe dog sat .\t2.6\n")
    return root


# --- items ----------------------------------------------------------------------------------------------

def test_items_are_the_first_rows_in_order_with_duplicates(glue_dir, tmp_path):
    it = paper_items("glue:sst2", glue_dir=glue_dir, max_samples=4)
    assert it.texts == ("the film was good .", "bad film .", "the film was good .", "a long day .")
    assert it.labels.tolist() == [1, 0, 1, 0] and it.task == "classification" and not it.pair
    assert it.n_source == 5 and "first 4 of 5" in it.rule and "duplicates kept" in it.rule
    sts = paper_items("glue:stsb", glue_dir=glue_dir)
    assert sts.texts[0] == "the cat sat . [SEP] the cat sat on the mat ." and sts.pair
    assert sts.labels.dtype == np.float64 and sts.labels.tolist() == [4.0, 1.0, 2.6]  # raw scores, not binned
    assert sts.with_separator("</s>").texts[0] == "the cat sat . </s> the cat sat on the mat ."
    assert it.with_separator("</s>") is it
    (tmp_path / "n.txt").write_text("b\n\na\nb\n")
    txt = paper_items(str(tmp_path / "n.txt"))
    assert txt.texts == ("b", "a", "b") and "blank line" in txt.rule
    with pytest.raises(ValueError, match="max_samples: expected an integer >= 2"):
        paper_items("glue:sst2", glue_dir=glue_dir, max_samples=1)


def test_sample_sources_keep_source_order():
    lee = paper_items("sample:lee", max_samples=60)
    assert lee.pair and lee.task == "regression" and lee.n == 60 and lee.n_source == 1225
    from embedgeom import samples

    docs = samples.lee_documents()
    assert lee.texts[0] == f"{docs[0]} [SEP] {docs[1]}" and lee.texts[49] == f"{docs[1]} [SEP] {docs[2]}"
    assert lee.labels[0] == pytest.approx(samples.lee_similarity()[0][1])
    pol = paper_items("sample:polarity", max_samples=150)
    assert pol.texts == tuple(s for s, _ in samples.polarity_sentences()[:150])


def test_pair_joining_is_one_segment_with_a_separator_token(tiny128):
    tok = tiny128.tokenizer
    assert paper_separator(tok) == ("[SEP]", None)
    ids = paper_tokenize(tok, ["the cat sat [SEP] the dog ran", "hello"])
    assert ids.shape == (2, 128) and ids.dtype == torch.int64
    row = ids[0].tolist()
    assert row.count(tok.sep_token_id) == 2 and row.index(tok.sep_token_id) == 4  # [CLS] the cat sat [SEP]
    assert row[row.index(tok.sep_token_id, 5) + 1:] == [tok.pad_token_id] * (128 - 9)
    enc = tok(["the cat sat [SEP] the dog ran"], max_length=128, truncation=True, padding="max_length")
    assert set(enc["token_type_ids"][0]) == {0}  # one segment

    class RobertaLike:
        sep_token = "</s>"

    sep, note = paper_separator(RobertaLike())
    assert sep == "</s>" and "instead of the literal '[SEP]'" in note


# --- spectrum metrics -----------------------------------------------------------------------------------

def test_spectrum_uses_S_squared_and_singular_value_erank():
    z = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 2.0], [0.0, -2.0]])  # centred, orthogonal columns
    sp = paper_spectrum(z)
    np.testing.assert_allclose(sp.singular_values, [math.sqrt(8), math.sqrt(2)])
    np.testing.assert_allclose(sp.eigenvalues, [8.0, 2.0])  # S^2, not divided by n - 1 = 3
    np.testing.assert_allclose(sp.explained, [0.8, 0.2])
    p = np.array([2 / 3, 1 / 3])  # singular values, not eigenvalues (which would give [0.8, 0.2])
    assert effective_rank_of(sp) == pytest.approx(math.exp(-(p * np.log(p)).sum()))
    assert effective_rank_of(sp) != pytest.approx(math.exp(-(0.8 * math.log(0.8) + 0.2 * math.log(0.2))))
    assert stable_rank_of(sp) == pytest.approx(10.0 / 8.0)
    h = -(0.8 * math.log(0.8) + 0.2 * math.log(0.2))
    assert spectral_entropy_of(sp) == pytest.approx(h / math.log(2))


def test_spectral_entropy_normaliser_is_log_min_n_d(rng):
    z = rng.standard_normal((6, 40)).astype(np.float32)
    sp = paper_spectrum(z)
    assert len(sp.singular_values) == 6
    s = np.linalg.svd(z.astype(np.float64) - z.astype(np.float64).mean(0), compute_uv=False)
    ev = s ** 2 / ((s ** 2).sum() + 1e-12)
    ev = ev[ev > 0]
    expected = -(ev * np.log(ev)).sum() / math.log(6)  # not log(40)
    assert spectral_entropy_of(sp) == pytest.approx(expected)
    values, _, _ = paper_metrics(z)
    assert values["spectral_entropy"][0] == pytest.approx(expected)


def test_rank_90_counts_a_component_landing_exactly_on_090():
    assert 0.5 + 0.4 == 0.9
    assert rank_at_explained(np.array([0.5, 0.4, 0.1])) == 2  # side="right" would give 3
    assert rank_at_explained(np.array([0.5, 0.3, 0.2])) == 3
    assert rank_at_explained(np.array([0.95, 0.05])) == 1
    z = np.diag([math.sqrt(5), math.sqrt(4), 1.0])  # rows; after centring the fractions shift, so check the rule
    sp = paper_spectrum(z)
    cum = np.cumsum(sp.explained)
    assert rank_at_explained(sp.explained) == int(np.argmax(cum >= 0.9)) + 1


# --- distance metrics -----------------------------------------------------------------------------------

def _unit(x):
    return x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-12)


def _brute_uniformity(x):
    z = _unit(np.asarray(x, dtype=np.float64))
    vals = [math.exp(-2 * np.sum((z[i] - z[j]) ** 2)) for i, j in itertools.combinations(range(len(z)), 2)]
    return math.log(np.mean(vals) + 1e-12)


def test_uniformity_subset_is_seeded(rng):
    small = rng.standard_normal((40, 3))
    assert paper_uniformity(small, seed=0) == pytest.approx((_brute_uniformity(small), 40))
    assert paper_uniformity(small, seed=5)[0] == pytest.approx(paper_uniformity(small, seed=0)[0])
    big = rng.standard_normal((1100, 3))
    a, n = paper_uniformity(big, seed=1)
    assert n == 1000 and paper_uniformity(big, seed=1)[0] == a
    assert paper_uniformity(big, seed=2)[0] != a
    idx = uniformity_subset(1100, 1)
    assert len(idx) == 1000 and len(set(idx.tolist())) == 1000
    np.testing.assert_array_equal(idx, np.random.default_rng(1).permutation(1100)[:1000])
    from scipy.spatial.distance import pdist

    d2 = pdist(_unit(big)[idx], "sqeuclidean")
    assert a == pytest.approx(math.log(np.exp(-2 * d2).mean() + 1e-12))


def test_alignment_is_the_unweighted_mean_of_per_class_means(rng):
    x = rng.standard_normal((8, 4))
    y = np.array([0, 0, 1, 1, 1, 1, 1, 2])  # sizes 2, 5 and 1 (a singleton class counts for nothing)
    z = _unit(x)

    def class_mean(c):
        idx = np.flatnonzero(y == c)
        return np.mean([np.sum((z[i] - z[j]) ** 2) ** 2 for i, j in itertools.combinations(idx, 2)])

    expected = (class_mean(0) + class_mean(1)) / 2
    pooled = np.mean([np.sum((z[i] - z[j]) ** 2) ** 2 for i, j in itertools.combinations(range(8), 2)
                      if y[i] == y[j]])
    assert class_conditional_alignment(x, y) == pytest.approx(expected)
    assert abs(expected - pooled) > 1e-3  # the pooled mean weights the 5-member class by its 10 pairs
    assert math.isnan(class_conditional_alignment(x[:3], [0, 1, 2]))


def test_regression_scores_are_binned_with_digitize():
    scores = [0.0, 0.99, 1.0, 1.5, 2.0, 3.99, 4.0, 5.0]
    assert paper_classes(scores, "regression").tolist() == [0, 0, 1, 1, 2, 3, 4, 4]
    assert paper_classes([2, 0, 1], "classification").tolist() == [2, 0, 1]


def test_intra_inter_ratio_by_brute_force(rng):
    x = rng.standard_normal((15, 5))
    y = rng.integers(0, 3, 15)
    z = _unit(x)
    pairs = list(itertools.combinations(range(15), 2))
    size = {k: int((y == k).sum()) for k in set(y.tolist())}
    intra = np.mean([np.linalg.norm(z[i] - z[j]) for i, j in pairs if y[i] == y[j]])
    inter = np.mean([np.linalg.norm(z[i] - z[j]) for i, j in pairs
                     if y[i] != y[j] and size[y[i]] >= 2 and size[y[j]] >= 2])
    got = class_distances(x, y)
    np.testing.assert_allclose(got, (intra, inter, intra / (inter + 1e-12)))
    values, why, _ = paper_metrics(x, np.zeros(15, dtype=np.int64))
    assert math.isnan(values["intra_inter_ratio"][0]) and "fewer than 2 classes" in why["intra_inter_ratio"]
    assert not math.isnan(values["alignment_class_conditional"][0])  # one class of 15 is still defined
    values, why, _ = paper_metrics(x, None)
    assert all(math.isnan(values[m][0]) for m in ("alignment_class_conditional", "intra_inter_ratio"))
    assert why["alignment_class_conditional"] == "the source has no labels"


def test_one_member_class_is_in_no_between_class_pair():
    """Class A = {e1, e2}, B = {-e1, -e2}, C = {e3} alone (rows scaled: only directions count). Same-class pairs:
    |e1 - e2| = sqrt 2 twice. A-B pairs: 2, sqrt 2, sqrt 2, 2 -> mean 1 + sqrt 2 / 2. Every pair with e3 is at
    sqrt 2; the reference skips the one-member class C, so those 4 pairs are not counted."""
    e = np.eye(3)
    x = np.stack([3 * e[0], 0.5 * e[1], -2 * e[0], -e[1], 7 * e[2]])
    y = np.array([0, 0, 1, 1, 2])
    r2 = math.sqrt(2)
    intra, inter = r2, 1 + r2 / 2
    intra_got, inter_got, ratio_got = class_distances(x, y)
    assert intra_got == pytest.approx(intra) and inter_got == pytest.approx(inter)
    assert ratio_got == pytest.approx(2 * r2 - 2)  # sqrt 2 / (1 + sqrt 2 / 2)
    counted = (4 + 2 * r2 + 4 * r2) / 8  # the other reading: the 4 pairs with C at sqrt 2 counted as well
    assert abs(inter_got - counted) > 0.1 and abs(ratio_got - intra / counted) > 0.05
    values, why, _ = paper_metrics(x, y)
    assert values["inter_class_distance"][0] == pytest.approx(inter)
    assert values["intra_inter_ratio"][0] == pytest.approx(intra / (inter + 1e-12))
    assert values["alignment_class_conditional"][0] == pytest.approx(4.0)  # (|e1 - e2|^2)^2 = 4 in A and in B
    assert "inter_class_distance" not in why
    # one class of 2 and two one-member classes: no between-class pair is left
    values, why, _ = paper_metrics(x[[0, 1, 2, 4]], [0, 0, 1, 2])
    assert values["intra_class_distance"][0] == pytest.approx(r2)
    assert math.isnan(values["inter_class_distance"][0]) and math.isnan(values["intra_inter_ratio"][0])
    assert "fewer than 2 classes with 2 or more items" in why["intra_inter_ratio"]
    with pytest.raises(ValueError, match="classes: expected one class per row"):
        class_distances(x, y[:3])


def test_task_token_targets_come_from_the_whole_text(tiny128, tmp_path):
    """The token targets of an analysed task: each text's most frequent token over the whole text (past the
    128-token input), not over the padded model input."""
    from tests.fixtures import WORDS

    ids = {w: 5 + i for i, w in enumerate(WORDS)}  # [PAD] [UNK] [CLS] [SEP] [MASK], then the words in order
    assert tiny128.tokenizer.convert_tokens_to_ids(["cat", "dog", "sun"]) == [ids["cat"], ids["dog"], ids["sun"]]
    rows = ["cat " * 100 + "dog " * 150, "sun sun dog", "dog " * 60 + "cat " * 61, "a sun"] * 3
    (tmp_path / "long.csv").write_text("text,label\n" + "\n".join(f"{t.strip()},{i % 2}"
                                                                for i, t in enumerate(rows)) + "\n")
    res = analyze_paper_task(tiny128, str(tmp_path / "long.csv"), probes=False, task="long")
    want = [ids["dog"], ids["sun"], ids["cat"], min(ids["a"], ids["sun"])] * 3
    assert res.arrays["struct|long|token_targets"].tolist() == want
    assert "two different classes that each have at least 2 members" in res.card["class_pairs"]


# --- poolings and the attention head --------------------------------------------------------------------

def test_attention_head_matches_a_hand_computation():
    before = torch.random.get_rng_state()
    head = ReferenceAttentionHead(8, seed=3)
    assert torch.equal(before, torch.random.get_rng_state())  # the global RNG is untouched
    g = torch.Generator().manual_seed(3)
    q = torch.randn(8, generator=g)
    torch.testing.assert_close(head.query, q)
    bound = math.sqrt(6.0 / (8 + 8))  # Xavier-uniform for a D x D weight
    assert head.key_weight.shape == (8, 8) and head.key_weight.abs().max() <= bound
    assert not torch.equal(ReferenceAttentionHead(8, seed=4).key_weight, head.key_weight)
    h = torch.randn(2, 5, 8)
    pad = torch.tensor([[False, False, False, True, True], [False] * 5])
    out = head.pool(h, pad)
    for b in range(2):
        real = [t for t in range(5) if not pad[b, t]]
        scores = torch.stack([head.query @ (head.key_weight @ h[b, t]) / math.sqrt(8) for t in real])
        w = torch.softmax(scores, dim=0)
        expected = sum(w[k] * h[b, t] for k, t in enumerate(real))  # hidden states, not keys
        torch.testing.assert_close(out[b], expected, rtol=1e-5, atol=1e-6)


def test_weighted_equals_mean_and_max_ignores_pads():
    h = torch.randn(3, 6, 4)
    pad = torch.tensor([[False, False, True, True, True, True], [False] * 6, [False, True, True, True, True, True]])
    h2 = h.clone()
    h2[pad] = 1e6  # pad content must not reach any pooling
    head = ReferenceAttentionHead(4, seed=0)
    a, b = paper_pool(h, pad, head), paper_pool(h2, pad, head)
    for p in PAPER_POOLINGS:
        torch.testing.assert_close(a[p], b[p])
    torch.testing.assert_close(a["weighted"], a["mean"], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(a["mean"][0], h[0, :2].mean(0))
    torch.testing.assert_close(a["max"][0], h[0, :2].max(0).values)
    torch.testing.assert_close(a["max"][2], h[2, 0])


def test_forward_attends_padding(tiny128):
    texts = ["the cat sat on the mat", "a dog ran"]
    emb = paper_embed(tiny128, texts, seed=0, batch_size=1)
    ids = paper_tokenize(tiny128.tokenizer, texts)
    pad = ids == tiny128.tokenizer.pad_token_id
    keep = (~pad).float().unsqueeze(-1)
    with torch.inference_mode():
        unmasked = tiny128.model(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state
        masked = tiny128.model(input_ids=ids, attention_mask=(~pad).long()).last_hidden_state
    manual = ((unmasked * keep).sum(1) / keep.sum(1)).numpy()
    np.testing.assert_allclose(emb.vectors["mean"], manual, rtol=1e-5, atol=1e-5)
    masked_mean = ((masked * keep).sum(1) / keep.sum(1)).numpy()
    assert np.abs(emb.vectors["mean"] - masked_mean).max() > 1e-3  # padding changes the output
    assert all(v.dtype == np.float32 and v.shape == (2, 32) for v in emb.vectors.values())


def test_encoder_with_fewer_than_128_positions_uses_its_limit_and_says_so(tiny_encoder):
    from embedgeom.reference.paper import analyze_paper_task, paper_max_length

    assert paper_max_length(tiny_encoder)[0] == 64
    r = analyze_paper_task(tiny_encoder, "sample:polarity", max_samples=30, probes=False)
    assert r.card["max_length"] == 64 and r.card["tokenization"]["max_length"] == 64
    assert "64 position embeddings" in r.card["deviations"]["max_length"]
    assert r.arrays["emb|polarity|mean|2"].shape == (30, 32)


# --- one task end to end --------------------------------------------------------------------------------

def test_analyze_paper_task_schema_on_a_tiny_bert(tiny128, tmp_path):
    words = ("the cat sat", "a dog ran", "the sun is high", "red car on the road", "a blue sky")
    rows = [f"{words[i % 5]} {words[(i * 3) % 5]},{'yes' if i % 3 else 'no'}" for i in range(36)]
    (tmp_path / "t.csv").write_text("text,label\n" + "\n".join(rows) + "\n")
    calls = []
    res = analyze_paper_task(tiny128, str(tmp_path / "t.csv"), max_samples=30, seed=1, batch_size=8,
                             progress=lambda d, t: calls.append((d, t)), task="mine")
    assert calls[-1] == (30, 30) and len(calls) == 4
    assert res.name == "mine" and res.card["n_items"] == 30 and res.card["max_length"] == 128
    assert {r["pooling"] for r in res.metric_rows} == set(PAPER_POOLINGS)
    assert len(res.metric_rows) == len(PAPER_POOLINGS) * len(PAPER_METRICS)
    keys = {"task", "pooling", "layer", "metric", "value", "stderr", "low", "high", "n", "confidence", "method",
            "replicates"}
    assert all(set(r) == keys and r["layer"] == 2 and r["task"] == "mine" for r in res.metric_rows)
    assert all(set(r) == {"task", "pooling", "layer", "probe", "metric", "value", "stderr", "n", "method"}
               for r in res.probe_rows)
    assert res.arrays["emb|mine|attention|2"].shape == (30, 32)
    assert res.arrays["spectrum|mine|mean|2"].shape == (30,)
    assert res.arrays["struct|mine|labels"].tolist()[:3] == [0, 1, 1]
    assert res.card["seeds"]["attention_head"] == 1 and "seeded_attention_head" in res.card["deviations"]
    items = paper_items(str(tmp_path / "t.csv"), max_samples=30)
    again = analyze_paper_task(tiny128, items, seed=1, probes=False)
    np.testing.assert_array_equal(again.arrays["emb|t|attention|2"], res.arrays["emb|mine|attention|2"])
    assert again.probe_rows == [] and again.card["max_samples"] == 30


def test_analyze_paper_task_on_minilm(minilm):
    res = analyze_paper_task(minilm, "sample:lee", max_samples=24, seed=0)
    n, d = 24, minilm.hidden_size
    assert res.card["pair_joining"] and res.card["labels"] == "regression scores"
    assert "regression_bins" in res.card["deviations"]
    for p in PAPER_POOLINGS:
        z = res.arrays[f"emb|lee|{p}|6"]
        assert z.shape == (n, d) and z.dtype == np.float32 and np.isfinite(z).all()
    value = {(r["pooling"], r["metric"]): r["value"] for r in res.metric_rows}
    for m in ("spectral_entropy", "effective_rank", "rank_90", "stable_rank", "uniformity"):
        assert np.isfinite(value[("mean", m)]) and value[("weighted", m)] == pytest.approx(value[("mean", m)],
                                                                                           rel=1e-5, abs=1e-6)
    ev = res.arrays["spectrum|lee|mean|6"]
    assert len(ev) == min(n, d)
    p = ev / (ev.sum() + 1e-12)
    p = p[p > 0]
    assert value[("mean", "spectral_entropy")] == pytest.approx(-(p * np.log(p)).sum() / math.log(min(n, d)))
    probe = {(r["pooling"], r["probe"], r["metric"]): r["value"] for r in res.probe_rows}
    assert -1 <= probe[("mean", "semantic", "spearman")] <= 1
    assert probe[("mean", "semantic", "spearman")] == pytest.approx(probe[("weighted", "semantic", "spearman")],
                                                                     abs=1e-4)
