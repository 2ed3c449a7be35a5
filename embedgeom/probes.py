"""Probes: what a linear read-out (or no training at all) can get from frozen embeddings.

All fitting is scikit-learn; all statistics scipy. Choices that change numbers:

* classification probes: ``StandardScaler`` + ``LogisticRegression(C=1.0, max_iter=2000)``, 5-fold
  stratified cross-validation (shuffled, seeded); every text gets one out-of-fold prediction, from which
  accuracy, macro-F1 and Matthews correlation are computed; the standard error is that of the mean
  out-of-fold correctness (binomial), and the per-item correctness is kept for paired comparisons;
* pair tasks use SentEval features ``[u, v, |u - v|, u * v]`` of the two sentences' separate embeddings, and
  their folds never put a text in both the training and the test pairs (:func:`text_disjoint_folds`): pairs
  are grouped by the connected components of their shared texts (every pair is tested once); when sharing is so
  dense that fewer than 2 x 5 components exist (Lee: every document is paired with every other), the texts are
  split into 5 seeded groups, a fold tests the pairs inside one group and trains on the pairs with no text in
  it, and pairs straddling two groups are not scored (their per-item entries are NaN);
* similarity tasks (STS-B, Lee, WordSim, SimLex): Spearman correlation between the cosine of the two
  embeddings and the gold score (no training), with a delete-a-group jackknife interval; plus a ridge probe
  (``RidgeCV`` over alphas 10^-3..10^3, 5-fold out-of-fold predictions) scored by Spearman;
* lexical probe (after the reference study's token probe; the definition is ours): for the K=20 words with
  document frequency closest to 50% (between 10% and 90%), predict from the text embedding whether the word
  occurs in the text - one multi-output least-squares linear classifier (standardised features, ridge
  alpha=1, +-1 targets, sign decision) fitted per fold for all words at once; balanced accuracy per word,
  5-fold CV, averaged over the words. The semantic-minus-lexical gap is the task probe's accuracy minus
  this lexical accuracy.
"""

from __future__ import annotations

import math
import re
import warnings
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

N_FOLDS = 5
LEXICAL_WORDS = 20
_WORD = re.compile(r"[a-z][a-z']+")


@dataclass(frozen=True)
class ProbeScore:
    """One probe number with its uncertainty. ``per_item`` (optional) holds per-item scores for pairing."""

    probe: str
    metric: str
    value: float
    stderr: float
    n: int
    method: str
    per_item: np.ndarray | None = field(default=None, repr=False, compare=False)

    def record(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("per_item")
        return d


def _folds(y: np.ndarray, seed: int, n_folds: int = N_FOLDS):
    from sklearn.model_selection import KFold, StratifiedKFold

    counts = np.bincount(y) if y.dtype.kind in "iu" and y.min() >= 0 else None
    if counts is not None and counts[counts > 0].min() >= n_folds:
        return StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    return KFold(n_splits=n_folds, shuffle=True, random_state=seed)


def text_disjoint_folds(pairs: np.ndarray, seed: int, n_folds: int = N_FOLDS
                        ) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, test) pair indices per fold such that no text is in both a fold's training and test pairs.

    ``pairs`` (m, 2) holds text indices. Pairs are grouped by the connected components of the graph their texts
    form; with at least ``2 * n_folds`` components, components are dealt to folds (seeded; every pair is tested
    exactly once). Otherwise the texts are split into ``n_folds`` seeded groups: a fold tests the pairs with both
    texts in its group and trains on the pairs with neither text in it; straddling pairs are never tested."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    pairs = np.asarray(pairs, dtype=np.int64)
    n_texts = int(pairs.max()) + 1
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n_texts, n_texts))
    _, comp = connected_components(graph, directed=False)
    rng = np.random.default_rng(seed)
    pair_comp = comp[pairs[:, 0]]
    used = np.unique(pair_comp)
    if len(used) >= 2 * n_folds:
        fold_of = dict(zip(rng.permutation(used).tolist(), np.arange(len(used)) % n_folds, strict=True))
        f = np.array([fold_of[c] for c in pair_comp])
        return [(np.flatnonzero(f != k), np.flatnonzero(f == k)) for k in range(n_folds)]
    group = np.empty(n_texts, dtype=np.int64)
    group[rng.permutation(n_texts)] = np.arange(n_texts) % n_folds
    ga, gb = group[pairs[:, 0]], group[pairs[:, 1]]
    return [(np.flatnonzero((ga != k) & (gb != k)), np.flatnonzero((ga == k) & (gb == k))) for k in range(n_folds)]


def _out_of_fold(model: Any, x: np.ndarray, y: np.ndarray, folds: list[tuple[np.ndarray, np.ndarray]]
                 ) -> np.ndarray:
    """Out-of-fold predictions over explicit folds; items no fold tests stay NaN."""
    from sklearn.base import clone

    pred = np.full(len(y), np.nan)
    for train, test in folds:
        if len(test) and len(train):
            pred[test] = clone(model).fit(x[train], y[train]).predict(x[test])
    return pred


def _logreg():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))


def classification_skip_reason(y: np.ndarray, name: str = "labels") -> str | None:
    """Why :func:`classification_probe` cannot run on the labels ``y`` (one line), or None when it can: it needs
    at least two classes and ``2 * N_FOLDS`` labelled items. A caller that skips the probe can record this."""
    y = np.asarray(y)
    classes = np.unique(y)
    if len(classes) < 2:
        return (f"{name}: expected at least two classes among the labels, got {classes.tolist()}; the "
                "classification probe cannot run on a single class (e.g. every repeated text kept a label of the "
                "same class).")
    if len(y) < 2 * N_FOLDS:
        return (f"{name}: expected at least {2 * N_FOLDS} labelled items for {N_FOLDS}-fold CV, got {len(y)}; the "
                "classification probe cannot run on so few: pass more labelled texts.")
    return None


def _check_xy(x: np.ndarray, y: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y)
    if x.ndim != 2 or len(x) != len(y):
        raise ValueError(f"{name}: expected features (n, d) and n labels, got {x.shape} and {y.shape}.")
    why = classification_skip_reason(y, name)
    if why is not None:
        raise ValueError(why)
    return x, y


def classification_probe(x: np.ndarray, y: np.ndarray, *, seed: int = 0, positive: int | None = None,
                         name: str = "linear", pairs: np.ndarray | None = None) -> list[ProbeScore]:
    """Cross-validated logistic-regression probe. Returns accuracy, macro-F1, MCC (and F1 of ``positive``).

    ``pairs``: for pair features, the (m, 2) text indices of each row, so folds are text-disjoint
    (:func:`text_disjoint_folds`); rows no fold tests get NaN per-item correctness and are not scored."""
    from sklearn.metrics import f1_score, matthews_corrcoef
    from sklearn.model_selection import cross_val_predict

    x, y = _check_xy(x, y, "labels")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence chatter on tiny folds; the scores say what they say
        if pairs is None:
            pred = cross_val_predict(_logreg(), x, y, cv=_folds(y, seed)).astype(np.float64)
            scheme = f"{N_FOLDS}-fold CV"
        else:
            pred = _out_of_fold(_logreg(), x, y, text_disjoint_folds(pairs, seed))
            scheme = f"{N_FOLDS}-fold text-disjoint CV"
    tested = np.isfinite(pred)
    correct = np.where(tested, pred == y, np.nan)
    yt, pt = y[tested], pred[tested].astype(y.dtype)
    n = int(tested.sum())
    acc = float(np.nanmean(correct))
    method = f"{scheme} out-of-fold predictions ({n} of {len(y)} items scored), seed {seed}; stderr binomial"
    out = [ProbeScore(name, "accuracy", acc, math.sqrt(max(acc * (1 - acc), 1e-12) / n), n, method, correct),
           ProbeScore(name, "macro_f1", float(f1_score(yt, pt, average="macro")), math.nan, n, method),
           ProbeScore(name, "mcc", float(matthews_corrcoef(yt, pt)), math.nan, n, method)]
    if positive is not None:
        out.append(ProbeScore(name, "f1", float(f1_score(yt, pt, pos_label=positive)), math.nan, n, method))
    return out


def pair_features(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """SentEval pair features [u, v, |u - v|, u * v]."""
    return np.concatenate([u, v, np.abs(u - v), u * v], axis=1)


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = spearmanr(a, b).statistic
    return float(r) if np.isfinite(r) else 0.0


def _group_jackknife_se(statistic: Any, n: int, groups: int, seed: int) -> float:
    """Delete-a-group jackknife standard error of ``statistic(keep_indices)`` (:mod:`embedgeom.metrics.jackknife`)."""
    from .metrics.jackknife import delete_group_replicates, jackknife_stderr

    return jackknife_stderr(delete_group_replicates(statistic, n, groups, seed)[1])


def cosine_similarity_probe(u: np.ndarray, v: np.ndarray, gold: np.ndarray, *, seed: int = 0,
                            groups: int = 20) -> ProbeScore:
    """Spearman correlation of cos(u_i, v_i) with the gold similarity (no training)."""
    u = np.asarray(u, dtype=np.float64)
    v = np.asarray(v, dtype=np.float64)
    gold = np.asarray(gold, dtype=np.float64)
    if len(gold) < 4:
        raise ValueError(f"gold: expected at least 4 scored pairs, got {len(gold)}.")
    cos = (u * v).sum(1) / np.linalg.norm(u, axis=1) / np.linalg.norm(v, axis=1)
    value = _spearman(cos, gold)
    g = min(groups, len(gold))
    se = _group_jackknife_se(lambda keep: _spearman(cos[keep], gold[keep]), len(gold), g, seed)
    return ProbeScore("cosine", "spearman", value, se, len(gold),
                      f"no training; delete-a-group jackknife ({g} groups, seed {seed})", cos)


def ridge_probe(x: np.ndarray, y: np.ndarray, *, seed: int = 0, pairs: np.ndarray | None = None) -> ProbeScore:
    """RidgeCV regression probe scored by Spearman of out-of-fold predictions. ``pairs``: as in
    :func:`classification_probe` (text-disjoint folds; unscored rows have NaN predictions)."""
    from sklearn.linear_model import RidgeCV
    from sklearn.model_selection import KFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if len(y) < 2 * N_FOLDS:
        raise ValueError(f"scores: expected at least {2 * N_FOLDS} items for {N_FOLDS}-fold CV, got {len(y)}.")
    model = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 3, 13)))
    if pairs is None:
        folds = list(KFold(N_FOLDS, shuffle=True, random_state=seed).split(x))
        scheme = f"{N_FOLDS}-fold CV"
    else:
        folds = text_disjoint_folds(pairs, seed)
        scheme = f"{N_FOLDS}-fold text-disjoint CV"
    pred = _out_of_fold(model, x, y, folds)
    tested = np.isfinite(pred)
    pt, yt = pred[tested], y[tested]
    se = _group_jackknife_se(lambda keep: _spearman(pt[keep], yt[keep]), len(yt), min(20, len(yt)), seed)
    return ProbeScore("ridge", "spearman", _spearman(pt, yt), se, len(yt),
                      f"{scheme} out-of-fold predictions ({len(yt)} of {len(y)} scored), seed {seed}; "
                      "delete-a-group jackknife", pred)


def lexical_words(texts: list[str], k: int = LEXICAL_WORDS) -> list[str]:
    """The k words whose document frequency is closest to 50%, among those between 10% and 90%."""
    docs = [set(_WORD.findall(t.lower())) for t in texts]
    df = Counter(w for d in docs for w in d)
    n = len(texts)
    cands = [(abs(c / n - 0.5), w) for w, c in df.items() if 0.1 <= c / n <= 0.9]
    return [w for _, w in sorted(cands)[:k]]


def lexical_probe(x: np.ndarray, texts: list[str], *, seed: int = 0, k: int = LEXICAL_WORDS) -> ProbeScore | None:
    """Mean balanced accuracy of predicting 'word w occurs in the text' for the :func:`lexical_words`.
    None when the texts have no word in the 10-90% document-frequency band."""
    from sklearn.linear_model import Ridge
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.model_selection import KFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    words = lexical_words(texts, k)
    if not words or len(texts) < 2 * N_FOLDS:
        return None
    docs = [set(_WORD.findall(t.lower())) for t in texts]
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray([[w in d for w in words] for d in docs], dtype=np.float64)  # (n, K) presence
    model = make_pipeline(StandardScaler(), Ridge(alpha=1.0))
    pred = cross_val_predict(model, x, 2.0 * y - 1.0, cv=KFold(N_FOLDS, shuffle=True, random_state=seed)) > 0
    s = np.asarray([balanced_accuracy_score(y[:, j], pred[:, j]) for j in range(len(words))])
    return ProbeScore("lexical", "balanced_accuracy", float(s.mean()), float(s.std(ddof=1) / math.sqrt(len(s)))
                      if len(s) > 1 else math.nan, len(texts),
                      f"{len(s)} word-presence probes ({', '.join(words[:5])}, ...), {N_FOLDS}-fold CV; stderr "
                      "over words")
