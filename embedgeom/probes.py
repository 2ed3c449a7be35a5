"""Probes: what a linear read-out (or no training at all) can get from frozen embeddings.

All fitting is scikit-learn; all statistics scipy. Choices that change numbers:

* classification probes: ``StandardScaler`` + ``LogisticRegression(C, max_iter=2000)``, 5-fold
  stratified cross-validation (shuffled, seeded); every text gets one out-of-fold prediction, from which
  accuracy, macro-F1 and Matthews correlation are computed; the standard error is that of the mean
  out-of-fold correctness (binomial), and the per-item correctness is kept for paired comparisons.
  ``C`` (the inverse regularisation strength) is fixed at :data:`DEFAULT_C` = 1.0 unless chosen: a positive
  number fixes it; ``"nested"`` picks it inside each outer fold from :data:`C_GRID` by an inner
  :data:`INNER_FOLDS`-fold stratified CV (shuffled, seeded) on that fold's training items only (pair tasks:
  text-disjoint inner folds), so no test item informs its own C. Every row's method states the C used.
  A task probe needs at least two classes, ``2 * N_FOLDS`` items and on average ``N_FOLDS`` items per class
  (:func:`classification_skip_reason`): 1,417 distinct numbers are a regression target, not classes;
* single-text regression scores (a numeric label with many values, ``label_task == "regression"``): the ridge
  probe below on the text embeddings, scored by Spearman and R^2 (:func:`regression_probe`);
* pair tasks use SentEval features ``[u, v, |u - v|, u * v]`` of the two sentences' separate embeddings, and
  their folds never put a text in both the training and the test pairs (:func:`text_disjoint_folds`): pairs
  are grouped by the connected components of their shared texts (every pair is tested once); when sharing is so
  dense that fewer than 2 x 5 components exist (Lee: every document is paired with every other), the texts are
  split into 5 seeded groups, a fold tests the pairs inside one group and trains on the pairs with no text in
  it, and pairs straddling two groups are not scored (their per-item entries are NaN);
* similarity tasks (STS-B, Lee, WordSim, SimLex): Spearman correlation between the cosine of the two
  embeddings and the gold score (no training), with a delete-a-group jackknife interval; plus a ridge probe
  (``StandardScaler`` + ``RidgeCV`` over alphas 10^-3..10^3, 5-fold shuffled seeded out-of-fold predictions)
  scored by Spearman, with a delete-a-group jackknife standard error (20 groups);
* lexical probe (after the reference study's token probe; the definition is ours): for the K=20 words with
  document frequency closest to 50% (between 10% and 90%), predict from the text embedding whether the word
  occurs in the text - one multi-output least-squares linear classifier (standardised features, ridge
  alpha=1, +-1 targets, sign decision) fitted per fold for all words at once; balanced accuracy per word,
  5-fold CV, averaged over the words. The semantic-minus-lexical gap is the task probe's accuracy minus
  this lexical accuracy.

Chance: every score carries ``chance``, what a label-blind predictor scores on the same scored items
(:func:`chance_levels`): accuracy - the majority class's share of the scored items; macro-F1 - the macro-F1 of
always predicting the majority class, ``2p / (1 + p) / K`` (p its share, K the classes among the scored items);
F1 of the positive class - always predicting the positive class, ``2q / (1 + q)`` (q its share); MCC, Spearman
and R^2 - 0 (a constant prediction, or one independent of the target); the lexical probe's balanced accuracy -
0.5; the semantic-minus-lexical gap - none (NaN: a difference of two probes). A score is *below chance*
(:meth:`ProbeScore.below_chance`) when the upper end of its normal interval, ``value + z * stderr`` at the
result's confidence, lies below chance; a score without a standard error (macro-F1, MCC, F1) is never flagged.
A task probe below chance usually means labels leaking through the folds (e.g. anti-correlated duplicates), a
collapsed embedding, or too few items.
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
#: The logistic probe's fixed inverse regularisation strength (the default), and the grid and inner folds
#: ``probe_c="nested"`` chooses from.
DEFAULT_C = 1.0
C_GRID: tuple[float, ...] = (0.001, 0.01, 0.1, 1.0, 10.0, 100.0)
INNER_FOLDS = 3
#: The ridge probes' alpha grid (RidgeCV's efficient leave-one-out choice inside each training fold).
RIDGE_ALPHAS = tuple(np.logspace(-3, 3, 13).tolist())
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
    #: What a label-blind predictor scores on the same items (module docstring); NaN where none is defined.
    chance: float = math.nan

    def record(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("per_item")
        return d

    def below_chance(self, confidence: float = 0.95) -> bool:
        """Whether the upper end of the normal interval at ``confidence`` (``value + z * stderr``) lies below
        :attr:`chance`; False when the score has no standard error or no chance level."""
        from scipy.stats import norm

        if not (0.0 < confidence < 1.0):
            raise ValueError(f"confidence: expected a level strictly between 0 and 1, got {confidence!r}.")
        if not (math.isfinite(self.value) and math.isfinite(self.stderr) and math.isfinite(self.chance)):
            return False
        return bool(self.value + float(norm.ppf(0.5 + confidence / 2)) * self.stderr < self.chance)


def chance_levels(y: np.ndarray, positive: Any = None) -> dict[str, float]:
    """What a label-blind predictor scores on the labels ``y`` (the scored items): ``accuracy`` = the majority
    class's share p, ``macro_f1`` = ``2p / (1 + p) / K`` (always predicting the majority class; K classes in
    ``y``), ``mcc`` = 0, and with ``positive``: ``f1`` = ``2q / (1 + q)`` (always predicting ``positive``, q its
    share)."""
    y = np.asarray(y)
    if y.ndim != 1 or len(y) == 0:
        raise ValueError(f"y: expected a non-empty 1-D array of labels, got shape {y.shape}.")
    _, counts = np.unique(y, return_counts=True)
    p = float(counts.max()) / len(y)
    out = {"accuracy": p, "macro_f1": 2 * p / (1 + p) / len(counts), "mcc": 0.0}
    if positive is not None:
        q = float(np.mean(y == positive))
        out["f1"] = 2 * q / (1 + q)
    return out


def parse_probe_c(value: Any, option: str = "probe_c") -> float | str:
    """The logistic probe's C: a positive finite number (or a string that reads as one) -> float, or
    ``"nested"`` (chosen per outer fold by inner CV over :data:`C_GRID`); anything else is one ValueError."""
    import numbers

    grid = ", ".join(f"{c:g}" for c in C_GRID)
    fix = (f"Pass a positive number (the inverse regularisation strength; default {DEFAULT_C:g}) or 'nested' "
           f"(chosen by inner CV over C in {{{grid}}}), e.g. --probe-c nested.")
    if isinstance(value, str):
        text = value.strip().lower()
        if text == "nested":
            return "nested"
        try:
            number = float(text)
        except ValueError:
            raise ValueError(f"{option}: expected a positive number or 'nested', got {value!r}. {fix}") from None
    elif isinstance(value, numbers.Real) and not isinstance(value, bool):
        number = float(value)
    else:
        raise ValueError(f"{option}: expected a positive number or 'nested', got {value!r}. {fix}")
    if not (math.isfinite(number) and number > 0):
        raise ValueError(f"{option}: expected a positive finite number or 'nested', got {value!r}. {fix}")
    return number


def c_statement(c: float | str, chosen: list[float] | None = None) -> str:
    """How a probe's C was set, as every probe row's method states it."""
    if c == "nested":
        grid = ", ".join(f"{v:g}" for v in C_GRID)
        picked = f" (chosen per outer fold: {', '.join(f'{v:g}' for v in chosen)})" if chosen else ""
        return f"C by nested CV over C in {{{grid}}}, {INNER_FOLDS}-fold inner stratified CV{picked}"
    return f"C={float(c):g} fixed"


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


def _logreg(c: float = DEFAULT_C):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000))


def _inner_splits(y: np.ndarray, pairs: np.ndarray | None, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The inner folds nested CV chooses C on, over one outer fold's training items only: stratified (shuffled,
    seeded) for single texts; text-disjoint for pairs when at least two such folds have items on both sides,
    else stratified."""
    if pairs is not None:
        folds = [(tr, te) for tr, te in text_disjoint_folds(pairs, seed, INNER_FOLDS)
                 if len(te) and len(np.unique(y[tr])) >= 2]
        if len(folds) >= 2:
            return folds
    return list(_folds(y, seed, INNER_FOLDS).split(np.zeros((len(y), 1)), y))


def _fit_predict(x: np.ndarray, y: np.ndarray, folds: list[tuple[np.ndarray, np.ndarray]], c: float | str,
                 seed: int, pairs: np.ndarray | None) -> tuple[np.ndarray, list[float]]:
    """Out-of-fold predictions of the logistic probe (NaN for items no fold tests) and the C used per fold."""
    from sklearn.model_selection import GridSearchCV

    pred = np.full(len(y), np.nan)
    chosen: list[float] = []
    for train, test in folds:
        if not (len(test) and len(train)):
            continue
        if c == "nested":
            inner = _inner_splits(y[train], None if pairs is None else pairs[train], seed)
            model = GridSearchCV(_logreg(), {"logisticregression__C": list(C_GRID)}, cv=inner, scoring="accuracy",
                                 error_score=np.nan).fit(x[train], y[train])
            chosen.append(float(model.best_params_["logisticregression__C"]))
        else:
            model = _logreg(float(c)).fit(x[train], y[train])
            chosen.append(float(c))
        pred[test] = model.predict(x[test])
    return pred, chosen


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
    if len(y) < N_FOLDS * len(classes):
        return (f"{name}: expected on average at least {N_FOLDS} items per class for {N_FOLDS}-fold CV, got "
                f"{len(classes)} classes over {len(y)} items ({len(y) / len(classes):.2g} per class); so many "
                "classes usually means a numeric score read as classes: pass the file spec with ?task=regression "
                "(or merge classes, or pass more items).")
    return None


def regression_skip_reason(y: np.ndarray, name: str = "scores") -> str | None:
    """Why :func:`regression_probe` cannot run on the scores ``y`` (one line), or None when it can: it needs
    ``2 * N_FOLDS`` finite scores that are not all equal."""
    y = np.asarray(y, dtype=np.float64)
    if len(y) < 2 * N_FOLDS:
        return (f"{name}: expected at least {2 * N_FOLDS} scored items for {N_FOLDS}-fold CV, got {len(y)}; the "
                "regression probe cannot run on so few: pass more scored texts.")
    if not np.isfinite(y).all():
        return f"{name}: expected finite scores, got {int((~np.isfinite(y)).sum())} NaN or infinite one(s)."
    if np.ptp(y) == 0:
        return (f"{name}: expected scores that vary, got the one value {y[0]:g} for all {len(y)} items; the "
                "regression probe cannot run on a constant target.")
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
                         name: str = "linear", pairs: np.ndarray | None = None,
                         c: float | str = DEFAULT_C) -> list[ProbeScore]:
    """Cross-validated logistic-regression probe. Returns accuracy, macro-F1, MCC (and F1 of ``positive``),
    each with its ``chance`` (:func:`chance_levels` of the scored items).

    ``pairs``: for pair features, the (m, 2) text indices of each row, so folds are text-disjoint
    (:func:`text_disjoint_folds`); rows no fold tests get NaN per-item correctness and are not scored.
    ``c``: the logistic regression's C, a positive number (default :data:`DEFAULT_C`, fixed) or ``"nested"``
    (chosen inside each outer fold by inner CV over :data:`C_GRID`; see the module docstring)."""
    from sklearn.metrics import f1_score, matthews_corrcoef

    c = parse_probe_c(c, "c")
    x, y = _check_xy(x, y, "labels")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence chatter on tiny folds; the scores say what they say
        if pairs is None:
            folds = list(_folds(y, seed).split(x, y))
            scheme = f"{N_FOLDS}-fold CV"
        else:
            folds = text_disjoint_folds(pairs, seed)
            scheme = f"{N_FOLDS}-fold text-disjoint CV"
        pred, chosen = _fit_predict(x, y, folds, c, seed, pairs)
    tested = np.isfinite(pred)
    correct = np.where(tested, pred == y, np.nan)
    yt, pt = y[tested], pred[tested].astype(y.dtype)
    n = int(tested.sum())
    acc = float(np.nanmean(correct))
    chance = chance_levels(yt, positive)
    method = (f"{scheme} out-of-fold predictions ({n} of {len(y)} items scored), seed {seed}; logistic regression "
              f"{c_statement(c, chosen)}; stderr binomial")
    out = [ProbeScore(name, "accuracy", acc, math.sqrt(max(acc * (1 - acc), 1e-12) / n), n, method, correct,
                      chance["accuracy"]),
           ProbeScore(name, "macro_f1", float(f1_score(yt, pt, average="macro")), math.nan, n, method,
                      chance=chance["macro_f1"]),
           ProbeScore(name, "mcc", float(matthews_corrcoef(yt, pt)), math.nan, n, method, chance=0.0)]
    if positive is not None:
        out.append(ProbeScore(name, "f1", float(f1_score(yt, pt, pos_label=positive)), math.nan, n, method,
                              chance=chance["f1"]))
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
                      f"no training; delete-a-group jackknife ({g} groups, seed {seed})", cos, 0.0)


def _ridge_out_of_fold(x: np.ndarray, y: np.ndarray, seed: int, pairs: np.ndarray | None
                       ) -> tuple[np.ndarray, str]:
    """Out-of-fold predictions of ``StandardScaler`` + ``RidgeCV(alphas=RIDGE_ALPHAS)`` over 5 shuffled seeded
    folds (text-disjoint folds with ``pairs``; unscored rows NaN), and the scheme's description."""
    from sklearn.linear_model import RidgeCV
    from sklearn.model_selection import KFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), RidgeCV(alphas=np.asarray(RIDGE_ALPHAS)))
    if pairs is None:
        folds = list(KFold(N_FOLDS, shuffle=True, random_state=seed).split(x))
        scheme = f"{N_FOLDS}-fold CV"
    else:
        folds = text_disjoint_folds(pairs, seed)
        scheme = f"{N_FOLDS}-fold text-disjoint CV"
    return _out_of_fold(model, x, y, folds), scheme


def ridge_probe(x: np.ndarray, y: np.ndarray, *, seed: int = 0, pairs: np.ndarray | None = None) -> ProbeScore:
    """RidgeCV regression probe scored by Spearman of out-of-fold predictions (chance 0). ``pairs``: as in
    :func:`classification_probe` (text-disjoint folds; unscored rows have NaN predictions)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if len(y) < 2 * N_FOLDS:
        raise ValueError(f"scores: expected at least {2 * N_FOLDS} items for {N_FOLDS}-fold CV, got {len(y)}.")
    pred, scheme = _ridge_out_of_fold(x, y, seed, pairs)
    tested = np.isfinite(pred)
    pt, yt = pred[tested], y[tested]
    se = _group_jackknife_se(lambda keep: _spearman(pt[keep], yt[keep]), len(yt), min(20, len(yt)), seed)
    return ProbeScore("ridge", "spearman", _spearman(pt, yt), se, len(yt),
                      f"{scheme} out-of-fold predictions ({len(yt)} of {len(y)} scored), seed {seed}; "
                      "delete-a-group jackknife", pred, 0.0)


def _r2(pred: np.ndarray, y: np.ndarray) -> float:
    ss_tot = float(((y - y.mean()) ** 2).sum())
    return 1.0 - float(((y - pred) ** 2).sum()) / ss_tot if ss_tot > 0 else math.nan


def regression_probe(x: np.ndarray, y: np.ndarray, *, seed: int = 0, groups: int = 20) -> list[ProbeScore]:
    """The ridge probe on single texts with numeric scores: ``StandardScaler`` + ``RidgeCV`` (alphas
    :data:`RIDGE_ALPHAS`), out-of-fold predictions of 5 shuffled seeded folds (``KFold(5, shuffle=True,
    random_state=seed)``), scored by Spearman correlation and R^2 (``1 - SS_res / SS_tot`` about the scores' mean)
    with the scores; standard errors by the delete-a-group jackknife (``groups`` seeded groups) of the
    out-of-fold predictions; chance 0 for both. The Spearman row keeps the predictions as ``per_item``."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or len(x) != len(y):
        raise ValueError(f"scores: expected features (n, d) and n scores, got {x.shape} and {y.shape}.")
    why = regression_skip_reason(y)
    if why is not None:
        raise ValueError(why)
    pred, scheme = _ridge_out_of_fold(x, y, seed, None)
    g = min(groups, len(y))
    method = (f"{scheme} out-of-fold predictions of StandardScaler + RidgeCV (alphas 10^-3..10^3), seed {seed}; "
              f"delete-a-group jackknife ({g} groups)")
    se_rho = _group_jackknife_se(lambda keep: _spearman(pred[keep], y[keep]), len(y), g, seed)
    se_r2 = _group_jackknife_se(lambda keep: _r2(pred[keep], y[keep]), len(y), g, seed)
    return [ProbeScore("ridge", "spearman", _spearman(pred, y), se_rho, len(y), method, pred, 0.0),
            ProbeScore("ridge", "r2", _r2(pred, y), se_r2, len(y), method, chance=0.0)]


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
                      "over words", chance=0.5)
