"""The reference protocol's probes (embedgeom.paper_probes) against direct scikit-learn calls."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from embedgeom.paper_probes import classification_cv, paper_probe_scores, standardise, token_targets


def _reference_logreg():
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=1.0, solver="saga", max_iter=500, random_state=0)


def _scores(rows):
    return {(p, m): (v, n) for p, m, v, n in rows}


@pytest.fixture
def data(rng):
    x = rng.standard_normal((60, 6)).astype(np.float32) * np.array([1, 5, 0.1, 2, 3, 1], dtype=np.float32)
    y = (x[:, 0] + 0.5 * rng.standard_normal(60) > 0).astype(np.int64)
    return x, y


def test_token_target_rule():
    special = [0, 101, 102]
    ids = np.array([[101, 7, 5, 7, 5, 102, 0, 0],   # tie 5/7 -> smallest id
                    [101, 102, 0, 0, 0, 0, 0, 0],   # nothing but specials -> 0
                    [101, 9, 9, 3, 102, 0, 0, 0],   # most frequent
                    [101, 8, 102, 8, 8, 102, 0, 0]])  # [SEP] inside a joined pair is removed too
    assert token_targets(ids, special).tolist() == [5, 0, 9, 8]


def test_semantic_probe_matches_direct_sklearn(data):
    from sklearn.metrics import matthews_corrcoef
    from sklearn.model_selection import cross_val_predict, cross_val_score
    from sklearn.preprocessing import StandardScaler

    x, y = data
    targets = np.repeat(np.arange(6), 10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rows, why = paper_probe_scores(x, y, "classification", targets, seed=0)
        xs = StandardScaler().fit_transform(x)  # fitted once on all items, before any split
        acc = cross_val_score(_reference_logreg(), xs, y, cv=5)
        f1 = cross_val_score(_reference_logreg(), xs, y, cv=5, scoring="f1_macro")
        mcc = matthews_corrcoef(y, cross_val_predict(_reference_logreg(), xs, y, cv=5))
        tok = cross_val_score(_reference_logreg(), xs, targets, cv=3)
    s = _scores(rows)
    assert s[("semantic", "accuracy")] == (pytest.approx(acc.mean()), 60)
    assert s[("semantic", "f1_macro")][0] == pytest.approx(f1.mean())
    assert s[("semantic", "mcc")][0] == pytest.approx(mcc)
    assert s[("semantic", "accuracy_fold_std")][0] == pytest.approx(acc.std())
    assert s[("token", "accuracy")] == (pytest.approx(tok.mean()), 60)
    assert s[("gap", "semantic_minus_token")][0] == pytest.approx(acc.mean() - tok.mean())
    assert why == {}
    np.testing.assert_array_equal(standardise(x), xs)


def test_token_probe_drops_rare_targets_and_needs_two_classes(data):
    from sklearn.model_selection import cross_val_score

    x, y = data
    targets = np.array([1] * 30 + [2] * 26 + [3] * 4)  # target 3 occurs 4 times: dropped
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = _scores(paper_probe_scores(x, y, "classification", targets, seed=0)[0])
        keep = targets != 3
        tok = cross_val_score(_reference_logreg(), standardise(x)[keep], targets[keep], cv=3)
    assert s[("token", "accuracy")] == (pytest.approx(tok.mean()), 56)
    one = np.array([1] * 56 + [2] * 4)
    rows, why = paper_probe_scores(x, y, "classification", one, seed=0)
    assert math.isnan(_scores(rows)[("token", "accuracy")][0]) and "needs 2" in why["token:accuracy"]
    assert math.isnan(_scores(rows)[("gap", "semantic_minus_token")][0])


def test_multiclass_has_no_mcc_and_regression_uses_ridge(rng, data):
    from scipy.stats import spearmanr
    from sklearn.linear_model import Ridge
    from sklearn.model_selection import cross_val_predict

    x, _ = data
    y3 = np.arange(60) % 3
    targets = np.repeat(np.arange(6), 10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rows, why = paper_probe_scores(x, y3, "classification", targets, seed=0)
    assert math.isnan(_scores(rows)[("semantic", "mcc")][0]) and "binary" in why["semantic:mcc"]
    scores = x[:, 1] * 0.3 + rng.standard_normal(60)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rows, _ = paper_probe_scores(x, scores, "regression", targets, seed=0)
    pred = cross_val_predict(Ridge(), standardise(x), scores, cv=5)  # KFold(5), no shuffling
    s = _scores(rows)
    assert s[("semantic", "spearman")][0] == pytest.approx(spearmanr(pred, scores).statistic)
    assert ("semantic", "accuracy") not in s
    assert s[("gap", "semantic_minus_token")][0] == pytest.approx(s[("semantic", "spearman")][0]
                                                                  - s[("token", "accuracy")][0])
    rows, why = paper_probe_scores(x, None, None, targets, seed=0)
    assert math.isnan(_scores(rows)[("semantic", "accuracy")][0]) and why["semantic:accuracy"] == \
        "the source has no labels"


def test_folds_are_sklearn_integer_cv(data):
    from sklearn.model_selection import cross_val_predict

    x, y = data
    xs = standardise(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        acc, _, pred = classification_cv(xs, y, 5, 0)
        direct = cross_val_predict(_reference_logreg(), xs, y, cv=5)  # StratifiedKFold(5), no shuffling
    assert len(acc) == 5
    np.testing.assert_array_equal(pred, direct)
    with pytest.raises(ValueError, match="labels: expected 60"):
        paper_probe_scores(x, y[:10], "classification", np.zeros(60, dtype=np.int64))
