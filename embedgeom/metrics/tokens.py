"""Token-level geometry: how contextual the token (contextual word) representations of one layer are.

Pure functions on arrays (numpy or torch; float64 inside), and the delete-a-group jackknife cores the token
analysis (:mod:`embedgeom.tokens`) computes its intervals with. Definitions (they change the numbers; the
token analysis records them in every result):

* ``intra_similarity`` (Ethayarajh 2019): per text, the mean cosine between each of its token states and the mean
  of that text's token states; then the mean over texts. Texts with fewer than 2 tokens are left out (one token is
  trivially similar to itself).
* ``self_similarity`` (Ethayarajh 2019): for each token id with at least ``min_occurrences`` (5) occurrences in at
  least ``min_texts`` (2) texts, the mean cosine over all pairs of distinct occurrences of the id, exact over every
  pair by the closed form ``(||sum z||^2 - sum ||z||^2) / (m (m - 1))`` on unit rows z; then the mean over ids,
  each id weighted equally.
* ``mev`` (maximum explainable variance, Ethayarajh 2019): for the same ids, the share of the variance of the id's
  *centred* occurrence matrix explained by its first principal component (largest covariance eigenvalue / sum of
  eigenvalues); mean over ids. An id whose occurrences are all identical (zero variance) is left out.
* ``anisotropy``: the mean cosine between token occurrences sampled one per text, over all pairs of distinct
  samples (closed form, exact at any n); the baseline the ``adjusted_*`` metrics subtract.
* rogue dimensions (Timkey & van Schijndel 2021): dimension k's contribution to the expected cosine between
  occurrences is ``CC_k = mean over pairs i != j of z_ik z_jk`` (exact, closed form); ``sum_k CC_k`` is the
  anisotropy; a dimension's *share* is ``CC_k / sum CC``; ``rogue_share`` is the combined share of the ``top``
  (3) dimensions with the largest CC_k. Shares are unbounded when the anisotropy is near 0.
* ``token_uniformity``: Wang & Isola uniformity (t = 2) of the one-per-text samples: exact over all pairs up to
  :data:`PAIR_LIMIT` pairs, and a seeded sample of :data:`PAIR_LIMIT` pairs beyond it (the result says which).
* ``token_effective_rank``: Roy & Vetterli effective rank of the centred one-per-text samples.
* ``token_norm`` / ``token_norm_std``: the mean and the (population) standard deviation of the L2 norms of all
  tokens.

Intervals: delete-a-group jackknife over *texts*: each replicate leaves out one group of texts (every token, sample
and occurrence they hold) and recomputes the statistic; the cores below take the per-text (or per-occurrence)
group index and return the full value and one replicate per group. An id keeps its place in a replicate while at
least 2 of its occurrences remain (the eligibility rule is applied once, on all texts).

``TOKEN_METRICS`` lists every token metric (name, definition, direction, reference); ``embedgeom metrics`` shows it
beside the sentence-level :data:`embedgeom.metrics.REGISTRY`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np
import torch

from ._validate import _fail, as_matrix, check_positive
from .moments import _relative_tol

#: Pairwise quantities that are not closed forms (token uniformity) are exact up to this many pairs and use a
#: seeded sample of this many pairs beyond it.
PAIR_LIMIT = 2_000_000
#: An id takes part in self-similarity and MEV with at least this many occurrences ...
MIN_OCCURRENCES = 5
#: ... in at least this many texts.
MIN_TEXTS = 2
#: The number of dimensions whose combined share ``rogue_share`` reports.
ROGUE_TOP = 3
#: Uniformity temperature of ``token_uniformity``.
UNIFORMITY_T = 2.0


# --- validation -------------------------------------------------------------------------------------------------

def _matrix(x: Any, name: str = "x", min_rows: int = 2) -> np.ndarray:
    t = as_matrix(x, name, min_rows=min_rows, nonzero_rows=True, check_collapse=False)
    return t.detach().cpu().to(torch.float64).numpy()


def _labels(v: Any, n: int, name: str) -> np.ndarray:
    arr = v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise _fail(name, f"a 1-D array of {n} labels (one per row of x)", f"shape {arr.shape}",
                    "Pass one integer label per token row.")
    if arr.dtype.kind not in "iu":
        raise _fail(name, "integer labels", f"dtype {arr.dtype}", "Pass integer token ids / text indices.")
    return arr.astype(np.int64)


def _unit(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def eligible_ids(token_ids: np.ndarray, texts: np.ndarray, min_occurrences: int = MIN_OCCURRENCES,
                 min_texts: int = MIN_TEXTS) -> np.ndarray:
    """The ids (sorted) with at least ``min_occurrences`` occurrences in at least ``min_texts`` distinct texts."""
    ids, counts = np.unique(token_ids, return_counts=True)
    pairs = np.unique(np.stack([token_ids, texts], axis=1), axis=0) if len(token_ids) else np.zeros((0, 2), int)
    pid, ptexts = np.unique(pairs[:, 0], return_counts=True)
    n_texts = dict(zip(pid.tolist(), ptexts.tolist(), strict=True))
    return np.array([i for i, c in zip(ids.tolist(), counts.tolist(), strict=True)
                     if c >= min_occurrences and n_texts.get(i, 0) >= min_texts], dtype=np.int64)


# --- cores: full value and delete-a-group replicates ------------------------------------------------------------

@dataclass(frozen=True)
class Replicated:
    """A statistic on all texts and with each group of texts left out (``replicates[g]``), and the number of
    units (texts, ids or samples) it averages over."""

    value: float
    replicates: np.ndarray
    n: int


def _masked_groups(group: np.ndarray, groups: int) -> np.ndarray:
    return np.bincount(group, minlength=groups)


def intra_from_texts(values: np.ndarray, group: np.ndarray, groups: int) -> Replicated:
    """Mean of per-text intra-similarities ``values`` (NaN = text left out) with each group of texts deleted."""
    ok = np.isfinite(values)
    s = np.bincount(group[ok], weights=values[ok], minlength=groups)
    c = np.bincount(group[ok], minlength=groups).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        reps = (s.sum() - s) / (c.sum() - c)
    return Replicated(float(s.sum() / c.sum()) if c.sum() else math.nan, reps, int(c.sum()))


def intra_per_text(x: np.ndarray, texts: np.ndarray) -> np.ndarray:
    """Per text label 0..max: mean cosine of its rows to their mean (NaN for texts with fewer than 2 rows)."""
    n_texts = int(texts.max()) + 1 if len(texts) else 0
    d = x.shape[1]
    sums = np.zeros((n_texts, d))
    usum = np.zeros((n_texts, d))
    np.add.at(sums, texts, x)
    np.add.at(usum, texts, _unit(x))
    counts = np.bincount(texts, minlength=n_texts)
    return intra_from_sums(sums, usum, counts)


def intra_from_sums(sums: np.ndarray, unit_sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Per-text intra-similarity from the text's sum of rows, sum of unit rows and row count:
    ``cos(x_i, mean) = z_i . s / ||s||`` summed over the text's rows and divided by their number."""
    norm = np.linalg.norm(sums, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (unit_sums * sums).sum(axis=1) / (norm * counts)
    return np.where((counts >= 2) & (norm > 0), out, np.nan)


def self_similarity_from_sums(sums: np.ndarray, sq: np.ndarray, counts: np.ndarray) -> Replicated:
    """Self-similarity from per-(id, group) sums of unit occurrence vectors ``sums`` (k, G, d), of their squared
    norms ``sq`` (k, G) and occurrence counts ``counts`` (k, G): per id ``(||s||^2 - q) / (m (m - 1))`` over all
    pairs of distinct occurrences, averaged over ids; replicates leave each group out (ids with fewer than 2
    occurrences left are dropped from that replicate)."""
    k, groups = counts.shape
    if k == 0:
        return Replicated(math.nan, np.full(groups, math.nan), 0)
    s_all, q_all, m_all = sums.sum(axis=1), sq.sum(axis=1), counts.sum(axis=1).astype(np.float64)

    def per_id(s: np.ndarray, q: np.ndarray, m: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            v = ((s * s).sum(axis=-1) - q) / (m * (m - 1))
        return np.where(m >= 2, v, np.nan)

    full = per_id(s_all, q_all, m_all)
    reps = np.empty(groups)
    for g in range(groups):
        v = per_id(s_all - sums[:, g], q_all - sq[:, g], m_all - counts[:, g])
        reps[g] = np.nanmean(v) if np.isfinite(v).any() else math.nan
    return Replicated(float(np.nanmean(full)), reps, int(np.isfinite(full).sum()))


def first_pc_share(x: np.ndarray) -> float:
    """Largest eigenvalue / sum of eigenvalues of the covariance of the centred rows of ``x`` (NaN when the rows do
    not vary or there are fewer than 2)."""
    if x.shape[0] < 2:
        return math.nan
    if x.shape[0] <= x.shape[1]:
        xc = x - x.mean(axis=0)
        return _first_pc_share_gram(xc @ xc.T)
    xc = x - x.mean(axis=0)
    return _share(np.linalg.eigvalsh(xc.T @ xc))


def _share(ev: np.ndarray) -> float:
    total = float(ev.clip(min=0).sum())
    return float(ev[-1] / total) if total > 0 else math.nan


def _first_pc_share_gram(gram: np.ndarray) -> float:
    """:func:`first_pc_share` from the uncentred Gram matrix ``X X^T`` of m rows: the centred Gram is
    ``J G J`` with ``J = I - 11^T/m`` (same non-zero eigenvalues as the covariance scatter)."""
    m = gram.shape[0]
    if m < 2:
        return math.nan
    r = gram.mean(axis=1)
    gc = gram - r[:, None] - r[None, :] + r.mean()
    return _share(np.linalg.eigvalsh((gc + gc.T) / 2.0))


def mev_from_occurrences(occ: np.ndarray, occ_id: np.ndarray, occ_group: np.ndarray, groups: int) -> Replicated:
    """MEV over the ids of ``occ_id`` (rows of ``occ`` are their occurrences, ``occ_group`` each one's text group):
    the first principal component's variance share per id, averaged over ids; replicates leave each group out
    (from the id's Gram matrix, computed once, when it has no more occurrences than dimensions)."""
    ids = np.unique(occ_id)
    if ids.size == 0:
        return Replicated(math.nan, np.full(groups, math.nan), 0)
    full = np.empty(ids.size)
    per = np.empty((ids.size, groups))
    for i, t in enumerate(ids):
        rows = occ[occ_id == t]
        grp = occ_group[occ_id == t]
        shifted = rows - rows.mean(axis=0)  # any common shift leaves every centred subset unchanged; no cancellation
        gram = shifted @ shifted.T if rows.shape[0] <= rows.shape[1] else None
        full[i] = _first_pc_share_gram(gram) if gram is not None else first_pc_share(rows)
        per[i] = full[i]
        for g in np.unique(grp):
            keep = grp != g
            per[i, g] = (_first_pc_share_gram(gram[np.ix_(keep, keep)]) if gram is not None
                         else first_pc_share(rows[keep]))
    reps = np.array([np.nanmean(per[:, g]) if np.isfinite(per[:, g]).any() else math.nan for g in range(groups)])
    return Replicated(float(np.nanmean(full)) if np.isfinite(full).any() else math.nan, reps,
                      int(np.isfinite(full).sum()))


def _pair_moments(z: np.ndarray, group: np.ndarray, groups: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per group: the sum of unit rows (G, d), the sum of their squares per dimension (G, d), and the row count."""
    d = z.shape[1]
    t = np.zeros((groups, d))
    q = np.zeros((groups, d))
    np.add.at(t, group, z)
    np.add.at(q, group, z * z)
    return t, q, np.bincount(group, minlength=groups).astype(np.float64)


def _cc(t: np.ndarray, q: np.ndarray, n: float) -> np.ndarray:
    """Per-dimension contribution to the mean cosine over pairs i != j: ``(T_k^2 - Q_k) / (n (n - 1))``."""
    return (t * t - q) / (n * (n - 1)) if n >= 2 else np.full(t.shape, np.nan)


def anisotropy_from_samples(z: np.ndarray, group: np.ndarray, groups: int) -> Replicated:
    """Mean cosine over all pairs of distinct unit rows ``z`` (one per text), exact, with group replicates."""
    t, q, c = _pair_moments(z, group, groups)
    full = float(_cc(t.sum(0), q.sum(0), c.sum()).sum())
    reps = np.array([_cc(t.sum(0) - t[g], q.sum(0) - q[g], c.sum() - c[g]).sum() for g in range(groups)])
    return Replicated(full, reps, int(c.sum()))


@dataclass(frozen=True)
class RogueDimensions:
    """Timkey & van Schijndel's rogue dimensions of a set of occurrences: ``contributions`` (d,) each dimension's
    CC_k (they sum to the mean cosine), ``shares`` = CC_k / sum CC, ``top`` the indices of the ``len(top)``
    largest contributions (descending) and ``combined`` their combined share."""

    contributions: np.ndarray
    shares: np.ndarray
    top: tuple[int, ...]
    combined: float

    @property
    def expected_cosine(self) -> float:
        return float(self.contributions.sum())


def _rogue(cc: np.ndarray, top: int) -> RogueDimensions:
    total = float(cc.sum())
    shares = cc / total if total != 0 else np.full(cc.shape, np.nan)
    order = tuple(int(i) for i in np.argsort(-cc, kind="stable")[:top])
    return RogueDimensions(cc, shares, order, float(cc[list(order)].sum() / total) if total != 0 else math.nan)


def rogue_from_samples(z: np.ndarray, group: np.ndarray, groups: int, top: int = ROGUE_TOP
                       ) -> tuple[RogueDimensions, Replicated]:
    """Rogue dimensions of the unit rows ``z`` and the combined share of the top ``top`` with group replicates
    (each replicate re-picks its top dimensions)."""
    t, q, c = _pair_moments(z, group, groups)
    full = _rogue(_cc(t.sum(0), q.sum(0), c.sum()), top)
    reps = np.array([_rogue(_cc(t.sum(0) - t[g], q.sum(0) - q[g], c.sum() - c[g]), top).combined
                     for g in range(groups)])
    return full, Replicated(full.combined, reps, int(c.sum()))


def uniformity_from_samples(z: np.ndarray, group: np.ndarray, groups: int, *, t: float = UNIFORMITY_T,
                            pair_limit: int = PAIR_LIMIT, seed: int = 0) -> tuple[Replicated, str]:
    """Uniformity ``log mean_{i != j} exp(-t ||z_i - z_j||^2)`` of unit rows: exact over all pairs when there are
    at most ``pair_limit`` of them, else over ``pair_limit`` seeded uniformly drawn pairs; with group replicates.
    Returns the statistic and its method."""
    n = z.shape[0]
    pairs = n * (n - 1) // 2
    block = np.zeros((groups, groups))
    count = np.zeros((groups, groups))
    if pairs <= pair_limit:
        zt = torch.from_numpy(z)
        onehot = torch.zeros((n, groups), dtype=torch.float64)
        onehot[torch.arange(n), torch.from_numpy(group)] = 1.0
        tile = 2048
        for a in range(0, n, tile):
            gram = zt[a:a + tile] @ zt.T
            k = torch.exp(-t * (2.0 - 2.0 * gram).clamp(min=0.0))
            idx = torch.arange(a, min(a + tile, n))
            k[idx - a, idx] = 0.0  # i == j is not a pair
            block += (onehot[a:a + tile].T @ k @ onehot).numpy()
        c = np.bincount(group, minlength=groups).astype(np.float64)
        count = np.outer(c, c) - np.diag(c)
        method = f"exact over all {pairs:,} pairs"
    else:
        rng = np.random.default_rng(seed)
        i = rng.integers(0, n, size=pair_limit)
        j = rng.integers(0, n - 1, size=pair_limit)
        j = j + (j >= i)
        sq = np.clip(2.0 - 2.0 * np.einsum("ij,ij->i", z[i], z[j]), 0.0, None)
        np.add.at(block, (group[i], group[j]), np.exp(-t * sq))
        np.add.at(count, (group[i], group[j]), 1.0)
        method = f"sampled: {pair_limit:,} seeded pairs of {pairs:,} (beyond the exact limit of {pair_limit:,})"

    def value(g: int | None) -> float:
        b, c = block.sum(), count.sum()
        if g is not None:
            b -= block[g].sum() + block[:, g].sum() - block[g, g]
            c -= count[g].sum() + count[:, g].sum() - count[g, g]
        return math.log(b / c) if c > 0 and b > 0 else math.nan

    return Replicated(value(None), np.array([value(g) for g in range(groups)]), n), method


def _erank_rows(x: np.ndarray, eps: float) -> float:
    """Effective rank of the centred rows of ``x`` from the eigenvalues of the smaller Gram matrix (float64);
    eigenvalues at or below the numerical-rank tolerance are zeros, as in :func:`embedgeom.metrics.spectrum`."""
    m, d = x.shape
    if m < 2:
        return math.nan
    xc = x - x.mean(axis=0)
    ev = np.sort(np.clip(np.linalg.eigvalsh(xc @ xc.T if m <= d else xc.T @ xc), 0.0, None))[::-1]
    if ev[0] <= 0:
        return math.nan
    sv = np.sqrt(ev[ev > ev[0] * _relative_tol(m, d, eps)])
    pr = sv / sv.sum()
    return math.exp(float(-(pr * np.log(pr)).sum()))


def effective_rank_from_samples(x: np.ndarray, group: np.ndarray, groups: int) -> Replicated:
    """Effective rank (exp entropy of the normalised singular values of the centred rows) with group replicates,
    each recomputed from the rows it keeps."""
    eps = float(np.finfo(np.float32).eps)
    reps = np.array([_erank_rows(x[group != g], eps) for g in range(groups)])
    return Replicated(_erank_rows(x, eps), reps, x.shape[0])


def norms_from_texts(norm_sum: np.ndarray, norm_m2: np.ndarray, counts: np.ndarray, group: np.ndarray, groups: int
                     ) -> tuple[Replicated, Replicated]:
    """Mean and population standard deviation of token norms from per-text sums of norms, sums of squared
    deviations from the text's own mean norm (``norm_m2``) and token counts, with group replicates. Texts are
    merged by the parallel-variance rule (Chan et al.), so a large common norm does not cancel."""
    counts = counts.astype(np.float64)
    ok = counts > 0
    text_mean = np.where(ok, norm_sum / np.where(ok, counts, 1.0), 0.0)

    def stats(keep: np.ndarray) -> tuple[float, float]:
        k = keep & ok
        n = counts[k].sum()
        if n <= 0:
            return math.nan, math.nan
        mean = norm_sum[k].sum() / n
        m2 = norm_m2[k].sum() + (counts[k] * (text_mean[k] - mean) ** 2).sum()
        return float(mean), math.sqrt(max(m2 / n, 0.0))

    full = stats(np.ones(counts.size, dtype=bool))
    reps = np.array([stats(group != g) for g in range(groups)])
    n = int(counts.sum())
    return Replicated(full[0], reps[:, 0], n), Replicated(full[1], reps[:, 1], n)


# --- public functions on arrays -----------------------------------------------------------------------------

def intra_similarity(x: Any, texts: Any) -> float:
    """Intra-text similarity (Ethayarajh 2019): for each text (rows of ``x`` labelled by ``texts``), the mean
    cosine between each of its token states and the mean of its token states; the mean over texts with at least 2
    tokens. Between -1 and 1; higher = a text's tokens point the same way."""
    xs = _matrix(x)
    lab = _labels(texts, xs.shape[0], "texts")
    _, lab = np.unique(lab, return_inverse=True)
    v = intra_per_text(xs, lab)
    if not np.isfinite(v).any():
        raise _fail("texts", "at least one text with 2 or more token rows", "none", "Pass texts of several tokens.")
    return float(np.nanmean(v))


def _id_sums(xs: np.ndarray, ids: np.ndarray, lab: np.ndarray, min_occurrences: int, min_texts: int
             ) -> tuple[np.ndarray, np.ndarray]:
    keep = eligible_ids(ids, lab, min_occurrences, min_texts)
    if keep.size == 0:
        raise _fail("token_ids", f"at least one id with {min_occurrences}+ occurrences in {min_texts}+ texts",
                    "none", "Pass more text, or lower min_occurrences / min_texts.")
    return keep, np.isin(ids, keep)


def _eligible(x: Any, token_ids: Any, texts: Any, min_occurrences: int, min_texts: int
              ) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray]:
    """The validated occurrences and ids, the eligible ids (:func:`_id_sums`) and the mask of their rows."""
    xs = _matrix(x)
    ids = _labels(token_ids, xs.shape[0], "token_ids")
    lab = _labels(texts, xs.shape[0], "texts")
    check_positive("min_occurrences", min_occurrences, integer=True)
    check_positive("min_texts", min_texts, integer=True)
    keep, rows = _id_sums(xs, ids, lab, min_occurrences, min_texts)
    return xs, ids, keep, rows


def self_similarity(x: Any, token_ids: Any, texts: Any, *, min_occurrences: int = MIN_OCCURRENCES,
                    min_texts: int = MIN_TEXTS) -> float:
    """Self-similarity (Ethayarajh 2019): for each token id with at least ``min_occurrences`` occurrences in at
    least ``min_texts`` texts, the mean cosine over all pairs of its distinct occurrences (exact, closed form),
    averaged over ids with equal weight. Rows of ``x`` are token occurrences, ``token_ids`` / ``texts`` their id
    and text. Between -1 and 1; higher = less contextual."""
    xs, ids, keep, rows = _eligible(x, token_ids, texts, min_occurrences, min_texts)
    z = _unit(xs[rows])
    slot = np.searchsorted(keep, ids[rows])
    sums = np.zeros((keep.size, 1, xs.shape[1]))
    np.add.at(sums[:, 0], slot, z)
    sq = np.bincount(slot, weights=(z * z).sum(1), minlength=keep.size)[:, None]
    counts = np.bincount(slot, minlength=keep.size)[:, None]
    return self_similarity_from_sums(sums, sq, counts).value


def mev(x: Any, token_ids: Any, texts: Any, *, min_occurrences: int = MIN_OCCURRENCES,
        min_texts: int = MIN_TEXTS) -> float:
    """Maximum explainable variance (Ethayarajh 2019): for each id eligible as in :func:`self_similarity`, the
    share of the variance of its centred occurrence matrix explained by the first principal component; mean over
    ids. Between 0 and 1; higher = an id's occurrences vary along one direction (less contextual)."""
    xs, ids, _, rows = _eligible(x, token_ids, texts, min_occurrences, min_texts)
    return mev_from_occurrences(xs[rows], ids[rows], np.zeros(int(rows.sum()), dtype=np.int64), 1).value


def anisotropy(x: Any) -> float:
    """Anisotropy baseline (Ethayarajh 2019): the mean cosine over all pairs of distinct rows, where the rows are
    token occurrences sampled one per text; exact (closed form). Between -1 and 1."""
    z = _unit(_matrix(x))
    return anisotropy_from_samples(z, np.zeros(len(z), dtype=np.int64), 1).value


def rogue_dimensions(x: Any, top: int = ROGUE_TOP) -> RogueDimensions:
    """Rogue dimensions (Timkey & van Schijndel 2021) of occurrences ``x``: each dimension's contribution
    ``CC_k = mean_{i != j} z_ik z_jk`` (z = unit rows) to the expected cosine, its share ``CC_k / sum CC``, the
    ``top`` dimensions with the largest contributions and their combined share."""
    z = _unit(_matrix(x))
    check_positive("top", top, integer=True)
    if top > z.shape[1]:
        raise _fail("top", f"at most the dimension d = {z.shape[1]}", repr(top), "Pass a smaller top.")
    full, _ = rogue_from_samples(z, np.zeros(len(z), dtype=np.int64), 1, top)
    return full


def rogue_share(x: Any, top: int = ROGUE_TOP) -> float:
    """The combined share of the expected cosine of the ``top`` (3) largest-contribution dimensions
    (:func:`rogue_dimensions`); near 1 = a few rogue dimensions dominate cosine similarity."""
    return rogue_dimensions(x, top).combined


def token_uniformity(x: Any, t: float = UNIFORMITY_T, *, pair_limit: int = PAIR_LIMIT, seed: int = 0) -> float:
    """Uniformity (Wang & Isola 2020) of token occurrences sampled one per text: ``log mean exp(-t ||z_i -
    z_j||^2)`` over all pairs of distinct unit rows up to ``pair_limit`` (2,000,000) pairs, else over
    ``pair_limit`` seeded pairs."""
    z = _unit(_matrix(x))
    check_positive("t", t)
    check_positive("pair_limit", pair_limit, integer=True)
    return uniformity_from_samples(z, np.zeros(len(z), dtype=np.int64), 1, t=t, pair_limit=pair_limit,
                                   seed=seed)[0].value


def token_effective_rank(x: Any) -> float:
    """Effective rank (Roy & Vetterli 2007) of token occurrences sampled one per text: exp entropy of the
    normalised singular values of the centred rows (as :func:`embedgeom.metrics.effective_rank`)."""
    xs = _matrix(x)
    return effective_rank_from_samples(xs, np.zeros(len(xs), dtype=np.int64), 1).value


def token_norm(x: Any) -> float:
    """Mean L2 norm of the token rows (every non-special token of the analysed texts in the token analysis); the
    scale the cosine-based token metrics divide out."""
    xs = _matrix(x, min_rows=1)
    return float(np.linalg.norm(xs, axis=1).mean())


def token_norm_std(x: Any) -> float:
    """Population standard deviation (divisor n) of the L2 norms of the token rows: how much token-state lengths
    vary around :func:`token_norm`."""
    xs = _matrix(x, min_rows=1)
    return float(np.linalg.norm(xs, axis=1).std())


# --- the token metric registry ------------------------------------------------------------------------------

@dataclass(frozen=True)
class TokenMetricInfo:
    """One token-level metric: its function on arrays (None for a difference of two metrics), definition,
    direction (None: neither direction is better), reference and range (None: unbounded)."""

    name: str
    function: Any
    description: str
    reference: str
    higher_is_better: bool | None = None
    bounds: tuple[float, float] | None = None
    kind: str = "token"


_ETH = "Ethayarajh 2019, EMNLP, 'How contextual are contextualized word representations?'"
_TIMKEY = "Timkey & van Schijndel 2021, EMNLP, 'All bark and no bite: rogue dimensions in transformer language models'"
_TOKEN_ENTRIES = [
    TokenMetricInfo("intra_similarity", intra_similarity, "mean over texts of the mean cosine between each token "
                    "state and the mean of the text's token states (texts of 2+ tokens)", _ETH, None, (-1.0, 1.0)),
    TokenMetricInfo("self_similarity", self_similarity, "mean over ids (5+ occurrences in 2+ texts) of the mean "
                    "cosine over all pairs of the id's distinct occurrences (exact)", _ETH, None, (-1.0, 1.0)),
    TokenMetricInfo("mev", mev, "mean over the same ids of the first principal component's explained-variance "
                    "ratio of the id's centred occurrence matrix", _ETH, None, (0.0, 1.0)),
    TokenMetricInfo("anisotropy", anisotropy, "mean cosine over all pairs of token occurrences sampled one per text "
                    "(exact)", _ETH, False, (-1.0, 1.0)),
    TokenMetricInfo("adjusted_self_similarity", None, "self_similarity minus the layer's anisotropy", _ETH, None,
                    (-2.0, 2.0)),
    TokenMetricInfo("adjusted_intra_similarity", None, "intra_similarity minus the layer's anisotropy", _ETH, None,
                    (-2.0, 2.0)),
    TokenMetricInfo("adjusted_mev", None, "mev minus the layer's anisotropy", _ETH, None, (-1.0, 2.0)),
    TokenMetricInfo("token_norm", token_norm, "mean L2 norm of all non-special token states", "—", None,
                    (0.0, math.inf)),
    TokenMetricInfo("token_norm_std", token_norm_std, "population standard deviation of the token-state norms",
                    "—", None, (0.0, math.inf)),
    TokenMetricInfo("rogue_share", rogue_share, f"combined share of the expected cosine between one-per-text "
                    f"occurrences carried by the {ROGUE_TOP} dimensions with the largest contributions", _TIMKEY,
                    False),
    TokenMetricInfo("token_uniformity", token_uniformity, "uniformity (t=2) of token occurrences sampled one per "
                    "text; exact up to 2,000,000 pairs, seeded sample beyond",
                    "Wang & Isola 2020, ICML", False, (-4.0 * UNIFORMITY_T, 0.0)),
    TokenMetricInfo("token_effective_rank", token_effective_rank, "effective rank of the centred token occurrences "
                    "sampled one per text", "Roy & Vetterli 2007, EUSIPCO", True, (1.0, math.inf)),
]

#: name -> TokenMetricInfo, read-only: every token-level metric the token analysis reports.
TOKEN_METRICS: Mapping[str, TokenMetricInfo] = MappingProxyType({e.name: e for e in _TOKEN_ENTRIES})
