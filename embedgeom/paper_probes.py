"""The reference study's probes (``paper_protocol.md``, "Probes"), to the letter, with scikit-learn.

* Features: a ``StandardScaler`` fitted once on all items, before any split (:func:`standardise`).
* Semantic probe, classification: ``LogisticRegression(C=1, solver="saga", max_iter=500)``; ``cv=5`` in
  scikit-learn's integer semantics (``StratifiedKFold(5)`` without shuffling for a classifier); the mean of the
  fold accuracies and of the fold macro-F1; MCC of the 5-fold out-of-fold predictions, binary tasks only.
  One set of fold fits serves all three: with the solver seeded, that is identical to separate
  ``cross_val_score`` / ``cross_val_predict`` calls.
* Semantic probe, regression (STS-B and other scored sources): plain ``Ridge()`` (alpha=1), 5-fold out-of-fold
  predictions (``KFold(5)`` without shuffling), Spearman correlation with the scores.
* Token probe: target = each item's most frequent token id (:func:`token_targets`), targets seen fewer than 5
  times dropped, the same logistic regression with ``cv=3`` (``StratifiedKFold(3)``), mean fold accuracy.
* Gap = semantic value (accuracy, or Spearman for regression) - token accuracy.

The reference leaves saga unseeded; here ``random_state=seed``. Fold-score spreads (numpy ``std``, ddof=0) are
reported as ``accuracy_fold_std`` (the released table's ``*_probe_std``).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from typing import Any

import numpy as np

SEMANTIC_FOLDS = 5
TOKEN_FOLDS = 3
TOKEN_MIN_COUNT = 5
PROBE_SETTINGS: dict[str, str] = {
    "features": "StandardScaler fitted once on all items (float32 features), before any split",
    "classifier": "LogisticRegression(C=1, solver='saga', max_iter=500, random_state=seed)",
    "semantic_cv": "cv=5 (scikit-learn integer semantics: StratifiedKFold(5) without shuffling for classes, "
                   "KFold(5) for regression); mean of fold accuracies and fold macro-F1; MCC from out-of-fold "
                   "predictions, binary tasks only",
    "regression": "Ridge() (alpha=1), out-of-fold predictions of KFold(5) without shuffling, Spearman with the scores",
    "token_targets": "most frequent non-special token id of each item's 128-token input (special ids = "
                     "tokenizer.all_special_ids; ties -> smallest id; 0 for an item with none); targets seen "
                     f"fewer than {TOKEN_MIN_COUNT} times dropped",
    "token_cv": "same classifier, cv=3 (StratifiedKFold(3) without shuffling), mean fold accuracy",
    "gap": "semantic accuracy (Spearman for regression) - token accuracy",
    "fold_std": "numpy std (ddof=0) of the fold accuracies",
}


def token_targets(input_ids: Any, special_ids: Iterable[int]) -> np.ndarray:
    """Each row's most frequent token id after removing ``special_ids`` (ties -> smallest id; 0 when nothing
    remains). ``input_ids``: (n, L) integer array or a list of id lists."""
    special = {int(s) for s in special_ids}
    out = np.zeros(len(input_ids), dtype=np.int64)
    for i, row in enumerate(input_ids):
        counts = Counter(int(t) for t in row if int(t) not in special)
        if counts:
            top = max(counts.values())
            out[i] = min(t for t, c in counts.items() if c == top)
    return out


def standardise(z: Any) -> np.ndarray:
    """``StandardScaler().fit_transform(z)`` on all items (dtype kept: float32 in, float32 out)."""
    from sklearn.preprocessing import StandardScaler

    return StandardScaler().fit_transform(np.asarray(z))


def _logreg(seed: int) -> Any:
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=1.0, solver="saga", max_iter=500, random_state=seed)


def classification_cv(x: np.ndarray, y: np.ndarray, folds: int, seed: int
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fold accuracies, fold macro-F1, out-of-fold predictions) of the reference classifier under
    scikit-learn's ``cv=folds`` for a classifier (StratifiedKFold without shuffling)."""
    from sklearn.base import clone
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.model_selection import check_cv

    est = _logreg(seed)
    splitter = check_cv(folds, y, classifier=True)
    acc, f1 = [], []
    pred = np.empty_like(y)
    for train, test in splitter.split(x, y):
        p = clone(est).fit(x[train], y[train]).predict(x[test])
        pred[test] = p
        acc.append(accuracy_score(y[test], p))
        f1.append(f1_score(y[test], p, average="macro"))
    return np.asarray(acc), np.asarray(f1), pred


def ridge_oof(x: np.ndarray, y: np.ndarray, folds: int = SEMANTIC_FOLDS) -> np.ndarray:
    """Out-of-fold predictions of ``Ridge()`` under ``cv=folds`` for a regressor (KFold without shuffling)."""
    from sklearn.linear_model import Ridge
    from sklearn.model_selection import cross_val_predict

    return cross_val_predict(Ridge(), x, y, cv=folds)


def paper_probe_scores(z: Any, labels: np.ndarray | None, task: str | None, targets: np.ndarray, *, seed: int = 0
                       ) -> tuple[list[tuple[str, str, float, int]], dict[str, str]]:
    """The reference probes on embeddings ``z`` (n, D): ([(probe, metric, value, n)], {probe:metric: why NaN}).

    ``labels``: class ids, or scores when ``task == "regression"``, or None; ``targets``: :func:`token_targets`.
    Rows: semantic accuracy / f1_macro / mcc / accuracy_fold_std (classification) or semantic spearman
    (regression); token accuracy / accuracy_fold_std; gap semantic_minus_token.
    """
    from scipy.stats import spearmanr

    x = standardise(z)
    n = len(x)
    if labels is not None and len(labels) != n:
        raise ValueError(f"labels: expected {n} labels (one per item), got {len(labels)}. Pass the items' labels.")
    if len(targets) != n:
        raise ValueError(f"targets: expected {n} token targets, got {len(targets)}. Pass token_targets(input_ids).")
    rows: list[tuple[str, str, float, int]] = []
    why: dict[str, str] = {}
    nan = math.nan
    semantic = nan
    if task == "regression" and labels is not None:
        y = np.asarray(labels, dtype=np.float64)
        try:
            pred = ridge_oof(x, y)
            semantic = float(spearmanr(pred, y).statistic)
        except ValueError as err:
            why["semantic:spearman"] = f"ridge probe not computable: {err}"
        rows.append(("semantic", "spearman", semantic, n))
    else:
        acc = f1 = mcc = std = nan
        if labels is None:
            why["semantic:accuracy"] = "the source has no labels"
        elif len(np.unique(labels)) < 2:
            why["semantic:accuracy"] = f"one class among the items ({np.unique(labels).tolist()})"
        else:
            from sklearn.metrics import matthews_corrcoef

            y = np.asarray(labels, dtype=np.int64)
            try:
                accs, f1s, pred = classification_cv(x, y, SEMANTIC_FOLDS, seed)
                acc, f1, std = float(accs.mean()), float(f1s.mean()), float(accs.std())
                if len(np.unique(y)) == 2:
                    mcc = float(matthews_corrcoef(y, pred))
                else:
                    why["semantic:mcc"] = f"{len(np.unique(y))} classes: the reference reports MCC for binary " \
                        "tasks only"
            except ValueError as err:
                why["semantic:accuracy"] = f"{SEMANTIC_FOLDS}-fold probe not computable: {err}"
        semantic = acc
        rows += [("semantic", "accuracy", acc, n), ("semantic", "f1_macro", f1, n), ("semantic", "mcc", mcc, n),
                 ("semantic", "accuracy_fold_std", std, n)]
    counts = Counter(targets.tolist())
    keep = np.asarray([counts[t] >= TOKEN_MIN_COUNT for t in targets.tolist()], dtype=bool)
    tok = tok_std = nan
    kept_classes = np.unique(targets[keep])
    if len(kept_classes) < 2:
        why["token:accuracy"] = (f"{len(kept_classes)} token target(s) occur >= {TOKEN_MIN_COUNT} times; the probe "
                                 "needs 2")
    else:
        try:
            accs, _, _ = classification_cv(x[keep], targets[keep], TOKEN_FOLDS, seed)
            tok, tok_std = float(accs.mean()), float(accs.std())
        except ValueError as err:
            why["token:accuracy"] = f"{TOKEN_FOLDS}-fold token probe not computable: {err}"
    rows += [("token", "accuracy", tok, int(keep.sum())), ("token", "accuracy_fold_std", tok_std, int(keep.sum())),
             ("gap", "semantic_minus_token", semantic - tok, n)]
    if math.isnan(semantic - tok):
        why["gap:semantic_minus_token"] = "the semantic or the token probe is undefined"
    return rows, why
