"""The reference study's probes (``embedgeom/reference/PROTOCOL.md``, "Probes"), to the letter, with scikit-learn.

* Features: a ``StandardScaler`` fitted once on the items a probe uses, before any split (:func:`standardise`):
  all items for the semantic probe, the kept items (targets with at least 5 items) for the token probe.
* Semantic probe, classification: ``LogisticRegression(C=1, solver="saga", max_iter=500)``; ``cv=5`` in
  scikit-learn's integer semantics (``StratifiedKFold(5)`` without shuffling for a classifier); the mean of the
  fold accuracies and of the fold macro-F1; MCC of the 5-fold out-of-fold predictions, binary tasks only.
  One set of fold fits serves all three: with the solver seeded, that is identical to separate
  ``cross_val_score`` / ``cross_val_predict`` calls.
* Semantic probe, regression (STS-B and other scored sources): plain ``Ridge()`` (alpha=1), 5-fold out-of-fold
  predictions (``KFold(5)`` without shuffling), Spearman correlation with the scores.
* Token probe: target = each item's most frequent token id over its whole text, tokenised without special tokens
  and without truncation (:func:`paper_token_targets`; not the padded model input, which is cut at 128 tokens),
  items whose target occurs fewer than 5 times dropped, features standardised on the items kept, the same logistic
  regression with ``cv=3`` (``StratifiedKFold(3)``), mean fold accuracy.
* Gap = semantic value (accuracy, or Spearman for regression) - token accuracy.

The reference leaves saga unseeded; here ``random_state=seed``. Fold-score spreads (numpy ``std``, ddof=0) are
reported as ``accuracy_fold_std`` (the released table's ``*_probe_std``).
"""

from __future__ import annotations

import math
import numbers
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

SEMANTIC_FOLDS = 5
TOKEN_FOLDS = 3
TOKEN_MIN_COUNT = 5
PROBE_SETTINGS: dict[str, str] = {
    "features": "StandardScaler fitted once on the items the probe uses (float32 features), before any split: all "
                "items for the semantic probe, the kept items for the token probe",
    "classifier": "LogisticRegression(C=1, solver='saga', max_iter=500, random_state=seed)",
    "semantic_cv": "cv=5 (scikit-learn integer semantics: StratifiedKFold(5) without shuffling for classes, "
                   "KFold(5) for regression); mean of fold accuracies and fold macro-F1; MCC from out-of-fold "
                   "predictions, binary tasks only",
    "regression": "Ridge() (alpha=1), out-of-fold predictions of KFold(5) without shuffling, Spearman with the scores",
    "token_targets": "most frequent token id of each item's whole text, tokenised without special tokens and "
                     "without truncation (ids in tokenizer.all_special_ids, such as a pair's [SEP], not counted; "
                     "ties -> smallest id; 0 for a text with no token); items whose target occurs fewer than "
                     f"{TOKEN_MIN_COUNT} times dropped",
    "token_cv": "same classifier on the kept items, standardised by a StandardScaler fitted on them, cv=3 "
                "(StratifiedKFold(3) without shuffling), mean fold accuracy",
    "gap": "semantic accuracy (Spearman for regression) - token accuracy",
    "fold_std": "numpy std (ddof=0) of the fold accuracies",
}


def _id_row(row: Any, i: int) -> list[int]:
    values = row.tolist() if isinstance(row, np.ndarray) else row
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise ValueError(f"input_ids: expected one list of token ids per item, got {type(row).__name__} for item "
                         f"{i}. Pass tokenizer(texts)['input_ids'] or an (n, L) integer array.")
    values = list(values)
    if not all(isinstance(t, numbers.Integral) and not isinstance(t, bool) for t in values):
        raise ValueError(f"input_ids: expected integer token ids, got {values[:5]!r}... for item {i}. Pass token "
                         "ids, not strings or floats.")
    return [int(t) for t in values]


def token_targets(input_ids: Any, special_ids: Iterable[int]) -> np.ndarray:
    """Each row's most frequent token id after removing ``special_ids`` (ties -> smallest id; 0 when nothing
    remains). ``input_ids``: a list of id lists (rows may differ in length) or an (n, L) integer array."""
    if isinstance(input_ids, np.ndarray) and input_ids.ndim != 2:
        raise ValueError(f"input_ids: expected an (n, L) integer array or a list of id lists, got an array of shape "
                         f"{input_ids.shape}. Pass one row of token ids per item.")
    if isinstance(input_ids, (str, bytes)) or not isinstance(input_ids, Iterable):
        raise ValueError(f"input_ids: expected a list of id lists, got {type(input_ids).__name__}. Pass "
                         "tokenizer(texts)['input_ids'].")
    if isinstance(special_ids, (str, bytes)) or not isinstance(special_ids, Iterable):
        raise ValueError(f"special_ids: expected an iterable of token ids, got {type(special_ids).__name__}. "
                         "Pass tokenizer.all_special_ids.")
    special_list = list(special_ids.tolist() if isinstance(special_ids, np.ndarray) else special_ids)
    if not all(isinstance(t, numbers.Integral) and not isinstance(t, bool) for t in special_list):
        raise ValueError(f"special_ids: expected integer token ids, got {special_list[:5]!r}. Pass "
                         "tokenizer.all_special_ids.")
    special = {int(t) for t in special_list}
    rows = [_id_row(row, i) for i, row in enumerate(input_ids)]
    out = np.zeros(len(rows), dtype=np.int64)
    for i, row in enumerate(rows):
        counts = Counter(t for t in row if t not in special)
        if counts:
            top = max(counts.values())
            out[i] = min(t for t, c in counts.items() if c == top)
    return out


def text_token_ids(tokenizer: Any, texts: Sequence[str]) -> list[list[int]]:
    """Each text's token ids as the reference counts them: the whole text, ``add_special_tokens=False``, no
    truncation, no padding (one segment; a pair's joining ``[SEP]`` stays in, as the tokenizer reads it)."""
    if isinstance(texts, str) or not isinstance(texts, Sequence) or not all(isinstance(t, str) for t in texts):
        raise ValueError(f"texts: expected a list of strings, got {type(texts).__name__}. Pass e.g. items.texts.")
    if not callable(tokenizer) or not hasattr(tokenizer, "all_special_ids"):
        raise ValueError(f"tokenizer: expected a Hugging Face tokenizer, got {type(tokenizer).__name__}. Pass "
                         "encoder.tokenizer.")
    if not texts:
        return []
    # verbose=False: texts longer than the model's limit are the point here, not a mistake to warn about
    enc = tokenizer(list(texts), add_special_tokens=False, truncation=False, padding=False, verbose=False)
    return [list(row) for row in enc["input_ids"]]


def paper_token_targets(tokenizer: Any, texts: Sequence[str]) -> np.ndarray:
    """The token probe's targets: :func:`token_targets` of :func:`text_token_ids` (the whole text without special
    tokens or truncation), with the tokenizer's ``all_special_ids`` removed (a pair's ``[SEP]`` is not counted)."""
    return token_targets(text_token_ids(tokenizer, texts), tokenizer.all_special_ids)


def standardise(z: Any) -> np.ndarray:
    """``StandardScaler().fit_transform(z)``: fitted on every row given (dtype kept: float32 in, float32 out)."""
    from sklearn.preprocessing import StandardScaler

    x = np.asarray(z)
    if x.ndim != 2 or len(x) < 1 or not np.issubdtype(x.dtype, np.number):
        raise ValueError(f"z: expected an (n, D) numeric array, got shape {x.shape} ({x.dtype}). Pass the pooled "
                         "embeddings.")
    return StandardScaler().fit_transform(x)


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

    ``labels``: class ids, or scores when ``task == "regression"``, or None; ``targets``: one token target per
    item (:func:`paper_token_targets`). The semantic probe's features are standardised on all items, the token
    probe's on the items it keeps (targets occurring at least 5 times), as the reference does.
    Rows: semantic accuracy / f1_macro / mcc / accuracy_fold_std (classification) or semantic spearman
    (regression); token accuracy / accuracy_fold_std (n = items kept); gap semantic_minus_token.
    """
    from scipy.stats import spearmanr

    z = np.asarray(z)
    if z.ndim != 2 or len(z) < 2 or not np.issubdtype(z.dtype, np.number):
        raise ValueError(f"z: expected an (n, D) numeric array of embeddings with n >= 2, got shape {z.shape} "
                         f"({z.dtype}). Pass the pooled embeddings.")
    if task not in (None, "classification", "regression"):
        raise ValueError(f"task: expected 'classification', 'regression' or None, got {task!r}. Pass the items' "
                         "task.")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed: expected an integer >= 0, got {seed!r}. Pass e.g. seed=0.")
    n = len(z)
    if labels is not None and len(labels) != n:
        raise ValueError(f"labels: expected {n} labels (one per item), got {len(labels)}. Pass the items' labels.")
    targets = np.asarray(targets)
    if targets.ndim != 1 or len(targets) != n or not (len(targets) == 0 or np.issubdtype(targets.dtype, np.integer)):
        raise ValueError(f"targets: expected {n} integer token targets (one per item), got shape {targets.shape} "
                         f"({targets.dtype}). Pass paper_token_targets(tokenizer, texts).")
    x = standardise(z)
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
            # the reference standardises the token probe's features on the items it keeps, not on all items
            accs, _, _ = classification_cv(standardise(z[keep]), targets[keep], TOKEN_FOLDS, seed)
            tok, tok_std = float(accs.mean()), float(accs.std())
        except ValueError as err:
            why["token:accuracy"] = f"{TOKEN_FOLDS}-fold token probe not computable: {err}"
    rows += [("token", "accuracy", tok, int(keep.sum())), ("token", "accuracy_fold_std", tok_std, int(keep.sum())),
             ("gap", "semantic_minus_token", semantic - tok, n)]
    if math.isnan(semantic - tok):
        why["gap:semantic_minus_token"] = "the semantic or the token probe is undefined"
    return rows, why
