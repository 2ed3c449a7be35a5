"""REGISTRY: every scalar metric by name, with its direction, reference and how its uncertainty is computed."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

import numpy as np

from . import cross, distance, spectral

Kind = Literal["set", "paired", "cross"]
#: How a metric's jackknife replicates are obtained (see embedgeom.metrics.uncertainty).
Family = Literal["spectral", "pair", "rowmean", "generic"]


#: ``bounds(n, d, options) -> (low, high)``: the range a metric's value can take on n rows of dimension d.
Bounds = Callable[[int, int, Mapping[str, Any]], tuple[float, float]]


@dataclass(frozen=True)
class MetricInfo:
    """One registered scalar metric.

    * ``kind``: ``"set"`` takes one (n, d) embedding set; ``"paired"`` takes row-aligned positive pairs
      ``(x, y)`` from one model; ``"cross"`` takes two models' embeddings of the same texts.
    * ``higher_is_better``: the conventional reading (None where neither direction is better).
    * ``family``: ``"spectral"`` (computed from the covariance spectrum; group-jackknifed via merged
      moments), ``"pair"`` (a U-statistic over pairs; exact delete-one jackknife from row sums),
      ``"rowmean"`` (a mean over rows; exact delete-one jackknife) or ``"generic"`` (delete-a-group
      jackknife by recomputation).
    * ``kwargs``: the options the registered value uses (recorded with every saved result).
    * ``pair_kernel`` (pair family): the kernel whose per-row sums give its exact delete-one jackknife.
    * ``bounds``: the metric's range on n rows in d dimensions; confidence intervals are clipped to it
      (:func:`embedgeom.metrics.confidence_interval`). None where the range is unbounded or not known.
    """

    name: str
    function: Callable[..., Any]
    higher_is_better: bool | None
    reference: str
    kind: Kind
    family: Family
    description: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    extract: Callable[[Any], float] = float
    bounds: Bounds | None = None
    #: For the ``"pair"`` family: which pair kernel's per-row sums give the exact delete-one jackknife
    #: (``"gaussian"``: exp(-t||z_i - z_j||^2); ``"cosine"``: z_i . z_j).
    pair_kernel: Literal["gaussian", "cosine"] | None = None

    def __call__(self, *arrays: Any, **overrides: Any) -> float:
        return float(self.extract(self.function(*arrays, **{**self.kwargs, **overrides})))


def _alpha(fit: Any) -> float:
    return float(fit.alpha)


def _alpha_r2(fit: Any) -> float:
    return float(fit.r2)


def _rank_bounds(n: int, d: int, _: Mapping[str, Any]) -> tuple[float, float]:
    """Centred data of n rows has rank at most min(n - 1, d)."""
    return 1.0, float(max(1, min(n - 1, d)))


def _entropy_bounds(n: int, d: int, opts: Mapping[str, Any]) -> tuple[float, float]:
    return 0.0, 1.0 if opts.get("normalize") else float(np.log(max(1, min(n - 1, d))))


def _fixed(low: float, high: float) -> Bounds:
    return lambda n, d, opts: (low, high)


_ENTRIES = [
    MetricInfo(name="uniformity", function=distance.uniformity, higher_is_better=False,
               reference="Wang & Isola 2020, ICML, 'Understanding contrastive representation learning through "
                         "alignment and uniformity on the hypersphere'", kind="set", family="pair",
               description="log mean over pairs i<j of exp(-t||z_i-z_j||^2) on L2-normalised rows, exact",
               kwargs={"t": 2.0}, bounds=lambda n, d, opts: (-4.0 * float(opts.get("t", 2.0)), 0.0),
               pair_kernel="gaussian"),
    MetricInfo(name="alignment", function=distance.alignment, higher_is_better=False,
               reference="Wang & Isola 2020, ICML", kind="paired", family="rowmean",
               description="mean ||z_x - z_y||^alpha over positive pairs, L2-normalised rows", kwargs={"alpha": 2.0},
               bounds=lambda n, d, opts: (0.0, 2.0 ** float(opts.get("alpha", 2.0)))),
    MetricInfo(name="mean_cosine", function=distance.mean_cosine, higher_is_better=False,
               reference="Ethayarajh 2019, EMNLP, 'How contextual are contextualized word representations?'",
               kind="set", family="pair", description="exact mean cosine similarity over pairs i != j (anisotropy)",
               bounds=_fixed(-1.0, 1.0), pair_kernel="cosine"),
    MetricInfo(name="effective_rank", function=spectral.effective_rank, higher_is_better=True,
               reference="Roy & Vetterli 2007, EUSIPCO, 'The effective rank: a measure of effective "
                         "dimensionality'", kind="set", family="spectral",
               description="exp entropy of normalised singular values of the centred data", bounds=_rank_bounds),
    MetricInfo(name="rankme", function=spectral.rankme, higher_is_better=True,
               reference="Garrido et al. 2023, ICML, 'RankMe: assessing the downstream performance of pretrained "
                         "self-supervised representations by their rank'", kind="set", family="spectral",
               description="exp entropy of normalised singular values of the uncentred data, p + 1e-7",
               bounds=lambda n, d, opts: (1.0, float(min(n, d)))),
    MetricInfo(name="stable_rank", function=spectral.stable_rank, higher_is_better=True,
               reference="Rudelson & Vershynin 2007, J. ACM", kind="set", family="spectral",
               description="sum of covariance eigenvalues / largest eigenvalue (centred)", bounds=_rank_bounds),
    MetricInfo(name="participation_ratio", function=spectral.participation_ratio, higher_is_better=True,
               reference="Gao et al. 2017, bioRxiv, 'A theory of multineuronal dimensionality'", kind="set",
               family="spectral", description="(sum lambda)^2 / sum lambda^2 of covariance eigenvalues",
               bounds=_rank_bounds),
    MetricInfo(name="spectral_entropy", function=spectral.spectral_entropy, higher_is_better=True,
               reference="Shannon entropy of the PCA spectrum", kind="set", family="spectral",
               description="entropy (nats) of normalised covariance eigenvalues", kwargs={"normalize": False},
               bounds=_entropy_bounds),
    MetricInfo(name="rank_at_variance", function=spectral.rank_at_variance, higher_is_better=True,
               reference="PCA explained variance", kind="set", family="spectral",
               description="number of principal components explaining 90% of the variance", kwargs={"q": 0.9},
               bounds=_rank_bounds),
    MetricInfo(name="alpha_req", function=spectral.alpha_req, higher_is_better=None,
               reference="Agrawal et al. 2022, NeurIPS, 'alpha-ReQ: assessing representation quality in "
                         "self-supervised learning by measuring eigenspectrum decay'", kind="set", family="spectral",
               description="power-law exponent of the covariance eigenspectrum (1/k-weighted log-log fit, ranks "
                           "2..rank/2)", kwargs={"window": None}, extract=_alpha),
    MetricInfo(name="alpha_req_r2", function=spectral.alpha_req, higher_is_better=None,
               reference="Agrawal et al. 2022, NeurIPS", kind="set", family="spectral",
               description="R^2 of the alpha-ReQ power-law fit in log-log space", kwargs={"window": None},
               extract=_alpha_r2, bounds=_fixed(0.0, 1.0)),
    MetricInfo(name="isoscore", function=spectral.isoscore, higher_is_better=True,
               reference="Rudman et al. 2022, ACL Findings, 'IsoScore: measuring the uniformity of embedding space "
                         "utilization'", kind="set", family="spectral",
               description="isotropy of the covariance eigenvalues, in [0, 1]", bounds=_fixed(0.0, 1.0)),
    MetricInfo(name="linear_cka", function=cross.linear_cka, higher_is_better=None,
               reference="Kornblith et al. 2019, ICML, 'Similarity of neural network representations revisited'",
               kind="cross", family="generic", description="linear centred kernel alignment between two models",
               kwargs={"debiased": False}, bounds=_fixed(0.0, 1.0)),
    MetricInfo(name="linear_cka_debiased", function=cross.linear_cka, higher_is_better=None,
               reference="Kornblith et al. 2019; Song et al. 2012", kind="cross", family="generic",
               description="linear CKA with unbiased HSIC estimators", kwargs={"debiased": True}),
    MetricInfo(name="knn_overlap", function=cross.knn_overlap, higher_is_better=None,
               reference="Huh et al. 2024, ICML, 'The platonic representation hypothesis' (mutual k-NN)",
               kind="cross", family="generic", description="mean fraction of shared 10 nearest neighbours (cosine)",
               kwargs={"k": 10, "metric": "cosine"}, bounds=_fixed(0.0, 1.0)),
]

#: name -> MetricInfo, read-only. ``REGISTRY["effective_rank"](x)`` computes the registered value.
REGISTRY: Mapping[str, MetricInfo] = MappingProxyType({e.name: e for e in _ENTRIES})


def get_metric(name: str | MetricInfo) -> MetricInfo:
    """Look a metric up by name (or pass a MetricInfo through) with a clear error for unknown names."""
    if isinstance(name, MetricInfo):
        return name
    if name not in REGISTRY:
        raise ValueError(f"metric: expected one of {tuple(REGISTRY)}, got {name!r}.")
    return REGISTRY[name]


def names(kind: Kind | None = None) -> tuple[str, ...]:
    """Registered metric names, optionally only those of one kind."""
    return tuple(n for n, e in REGISTRY.items() if kind is None or e.kind == kind)
