"""Probes against direct scikit-learn / scipy computations on synthetic data with known answers."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

from embedgeom.probes import (
    classification_probe,
    cosine_similarity_probe,
    lexical_probe,
    lexical_words,
    pair_features,
    ridge_probe,
)


def test_separable_classes_are_perfectly_probed(rng):
    y = np.repeat([0, 1, 2], 40)
    x = rng.standard_normal((120, 8)) * 0.1 + np.eye(8)[y] * 5
    scores = {s.metric: s for s in classification_probe(x, y)}
    assert scores["accuracy"].value == 1.0 and scores["mcc"].value == pytest.approx(1.0)
    assert scores["accuracy"].per_item.shape == (120,)


def test_random_labels_sit_near_chance(rng):
    y = rng.integers(0, 2, 400)
    x = rng.standard_normal((400, 5))
    acc = classification_probe(x, y)[0]
    assert abs(acc.value - 0.5) < 4 * acc.stderr + 0.02
    assert acc.stderr == pytest.approx(np.sqrt(acc.value * (1 - acc.value) / 400))


def test_probe_errors():
    with pytest.raises(ValueError, match="two classes"):
        classification_probe(np.ones((20, 2)), np.zeros(20, dtype=int))
    with pytest.raises(ValueError, match="at least 10"):
        classification_probe(np.ones((6, 2)), np.array([0, 1] * 3))


def test_cosine_similarity_probe_matches_scipy(rng):
    u, v = rng.standard_normal((2, 60, 4))
    gold = rng.standard_normal(60)
    cos = (u * v).sum(1) / np.linalg.norm(u, axis=1) / np.linalg.norm(v, axis=1)
    got = cosine_similarity_probe(u, v, gold)
    assert got.value == pytest.approx(spearmanr(cos, gold).statistic)
    assert got.stderr > 0 and got.n == 60


def test_ridge_probe_recovers_a_linear_score(rng):
    x = rng.standard_normal((200, 6))
    y = x @ np.arange(1.0, 7.0) + 0.01 * rng.standard_normal(200)
    assert ridge_probe(x, y).value > 0.99


def test_pair_features_layout():
    u, v = np.array([[1.0, -2.0]]), np.array([[3.0, 1.0]])
    np.testing.assert_array_equal(pair_features(u, v), [[1, -2, 3, 1, 2, 3, 3, -2]])


def test_lexical_probe_reads_word_presence(rng):
    texts = [" ".join(w for w in ("alpha", "beta", "gamma") if rng.random() < 0.5) + " filler" for _ in range(200)]
    texts = [t if t.strip() != "filler" else "alpha filler" for t in texts]
    words = lexical_words(texts)
    assert set(words) <= {"alpha", "beta", "gamma"} and "filler" not in words  # 'filler' is in 100% of texts
    x = np.asarray([[w in t.split() for w in ("alpha", "beta", "gamma")] for t in texts], dtype=float)
    x += 0.01 * rng.standard_normal(x.shape)
    assert lexical_probe(x, texts).value > 0.95
    assert lexical_probe(rng.standard_normal((200, 3)), texts).value < 0.65


def _texts_of(pairs, idx):
    return set(pairs[idx].ravel().tolist())


@pytest.mark.parametrize("dense", [True, False])
def test_text_disjoint_folds_never_share_a_text(dense):
    from itertools import combinations

    from embedgeom.probes import text_disjoint_folds

    if dense:  # Lee: every document paired with every other, one connected component
        pairs = np.array(list(combinations(range(50), 2)))
    else:  # sparse pairs: 60 components of two texts each plus a few shared premises (MNLI-like)
        pairs = np.array([(2 * i, 2 * i + 1) for i in range(60)] + [(0, 3), (4, 7)])
    folds = text_disjoint_folds(pairs, seed=0)
    tested = np.zeros(len(pairs), dtype=int)
    for train, test in folds:
        assert _texts_of(pairs, train).isdisjoint(_texts_of(pairs, test))
        tested[test] += 1
    assert tested.max() == 1
    if dense:
        assert 0 < tested.sum() < len(pairs)  # straddling pairs are not scored
    else:
        assert tested.sum() == len(pairs)  # every pair scored once


def test_pair_probes_on_lee_are_text_disjoint(rng):
    from itertools import combinations

    from embedgeom.probes import classification_probe, pair_features, ridge_probe

    pairs = np.array(list(combinations(range(30), 2)))
    x = rng.standard_normal((30, 6))
    feats = pair_features(x[pairs[:, 0]], x[pairs[:, 1]])
    y = rng.standard_normal(len(pairs))
    score = ridge_probe(feats, y, seed=0, pairs=pairs)
    scored = np.isfinite(score.per_item)
    assert score.n == scored.sum() < len(pairs) and "text-disjoint" in score.method
    labels = (y > 0).astype(int)
    acc = classification_probe(feats, labels, seed=0, pairs=pairs)[0]
    assert acc.n == np.isfinite(acc.per_item).sum() < len(pairs)
    assert acc.value == pytest.approx(np.nanmean(acc.per_item))
