"""The reference protocol's probes (embedgeom.reference.paper_probes) against direct scikit-learn calls."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from embedgeom.reference.paper_probes import (
    classification_cv,
    paper_probe_scores,
    paper_token_targets,
    standardise,
    text_token_ids,
    token_targets,
)


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
        tok = cross_val_score(_reference_logreg(), standardise(x[keep]), targets[keep], cv=3)
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


# --- the reference's token targets, scaler and their hand-computed values ----------------------------------

@pytest.fixture(scope="module")
def wordpiece(tmp_path_factory):
    """A WordPiece tokenizer with a known vocabulary (limit 128 tokens) and each token's id read from the file."""
    from tests.fixtures import bert_tokenizer, write_vocab

    vocab = write_vocab(tmp_path_factory.mktemp("vocab") / "vocab.txt")
    ids = {tok: i for i, tok in enumerate(vocab.read_text().split("\n")[:-1])}
    return bert_tokenizer(vocab, do_lower_case=True, model_max_length=128), ids


def test_token_targets_count_the_whole_text_without_special_tokens_or_truncation(wordpiece):
    from embedgeom.reference.paper import paper_tokenize

    tok, ids = wordpiece
    long_text = "cat " * 100 + "dog " * 150  # 250 tokens: the first 126 real positions hold 100 cat, 26 dog
    texts = [long_text, "dog [SEP] cat", "sun moon sun moon", "", "[SEP] [SEP] tree"]
    expected = [ids["dog"],                    # 150 x dog beats 100 x cat over the whole text
                min(ids["dog"], ids["cat"]),   # one each; the joining [SEP] (id 3) is not counted
                min(ids["sun"], ids["moon"]),  # tie -> the smaller id
                0,                             # no token at all
                ids["tree"]]                   # two [SEP]s are still special
    assert ids["[SEP]"] == 3 and ids["[SEP]"] < min(ids["dog"], ids["cat"])
    assert paper_token_targets(tok, texts).tolist() == expected
    assert [len(r) for r in text_token_ids(tok, texts)] == [250, 3, 4, 0, 3]  # no [CLS]/[SEP] added, no cut
    # the other reading - the padded, truncated 128-token model input - picks cat for the long text
    padded = token_targets(paper_tokenize(tok, texts).numpy(), tok.all_special_ids)
    assert padded[0] == ids["cat"] != expected[0]
    with pytest.raises(ValueError, match="texts: expected a list of strings"):
        text_token_ids(tok, "one text")
    with pytest.raises(ValueError, match="tokenizer: expected a Hugging Face tokenizer"):
        paper_token_targets(object(), ["a"])
    with pytest.raises(ValueError, match="input_ids: expected integer token ids"):
        token_targets([[1, "x"]], [0])
    with pytest.raises(ValueError, match="special_ids: expected an iterable"):
        token_targets([[1, 2]], 0)


def test_token_probe_standardises_on_the_kept_items(rng):
    """With a rare target whose 4 items are far from the rest, a scaler fitted on all items and one fitted on the
    kept items give different features, and different accuracies; the reference fits on the kept items."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    n_kept = 45
    targets = np.array([7] * 15 + [8] * 15 + [9] * 15 + [5] * 4)  # target 5: 4 items, dropped
    x = rng.standard_normal((49, 4))
    x[:45, 0] += np.repeat([0.0, 2.0, 4.0], 15)
    x[45:] = 40.0 + 10.0 * rng.standard_normal((4, 4))  # the rare items sit far away
    y = np.arange(49) % 2

    def fold_accuracy(features):
        accs = []
        for train, test in StratifiedKFold(3).split(features, targets[:n_kept]):
            clf = LogisticRegression(C=1.0, solver="saga", max_iter=500, random_state=0)
            clf.fit(features[train], targets[:n_kept][train])
            accs.append(np.mean(clf.predict(features[test]) == targets[:n_kept][test]))
        return float(np.mean(accs))

    kept = x[:n_kept]
    on_kept = (kept - kept.mean(axis=0)) / kept.std(axis=0)  # plain numpy, ddof=0 as StandardScaler
    on_all = ((x - x.mean(axis=0)) / x.std(axis=0))[:n_kept]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want, other = fold_accuracy(on_kept), fold_accuracy(on_all)
        s = _scores(paper_probe_scores(x, y, "classification", targets, seed=0)[0])
    assert abs(want - other) > 0.02  # the two readings differ here (32/45 vs 29/45 with scikit-learn 1.x)
    assert s[("token", "accuracy")] == (pytest.approx(want), n_kept)
    assert s[("gap", "semantic_minus_token")][0] == pytest.approx(s[("semantic", "accuracy")][0] - want)


def test_probe_scores_reject_bad_inputs(data):
    x, y = data
    with pytest.raises(ValueError, match="targets: expected 60 integer token targets"):
        paper_probe_scores(x, y, "classification", np.zeros(60))
    with pytest.raises(ValueError, match="task: expected 'classification', 'regression' or None"):
        paper_probe_scores(x, y, "ranking", np.zeros(60, dtype=np.int64))
    with pytest.raises(ValueError, match="z: expected an"):
        paper_probe_scores(x[0], y, "classification", np.zeros(60, dtype=np.int64))
