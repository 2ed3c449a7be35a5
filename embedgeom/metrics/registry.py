"""REGISTRY: every scalar metric by name, with its direction, reference and how its uncertainty is computed."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from . import cross, distance, spectral

Kind = Literal["set", "paired", "cross"]
#: How a metric's jackknife replicates are obtained (see embedgeom.metrics.uncertainty).
Family = Literal["spectral", "pair", "rowmean", "generic"]


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

    def __call__(self, *arrays: Any, **overrides: Any) -> float:
        return float(self.extract(self.function(*arrays, **{**self.kwargs, **overrides})))


def _alpha(fit: Any) -> float:
    return float(fit.alpha)


def _alpha_r2(fit: Any) -> float:
    return float(fit.r2)


_ENTRIES = [
    MetricInfo("uniformity", distance.uniformity, False,
               "Wang & Isola 2020, ICML, 'Understanding contrastive representation learning through "
               "alignment and uniformity on the hypersphere'", "set", "pair",
               "log mean over pairs i<j of exp(-t||z_i-z_j||^2) on L2-normalised rows, exact", {"t": 2.0}),
    MetricInfo("alignment", distance.alignment, False, "Wang & Isola 2020, ICML", "paired", "rowmean",
               "mean ||z_x - z_y||^alpha over positive pairs, L2-normalised rows", {"alpha": 2.0}),
    MetricInfo("mean_cosine", distance.mean_cosine, False,
               "Ethayarajh 2019, EMNLP, 'How contextual are contextualized word representations?'", "set",
               "pair", "exact mean cosine similarity over pairs i != j (anisotropy)"),
    MetricInfo("effective_rank", spectral.effective_rank, True,
               "Roy & Vetterli 2007, EUSIPCO, 'The effective rank: a measure of effective dimensionality'",
               "set", "spectral", "exp entropy of normalised singular values of the centred data"),
    MetricInfo("rankme", spectral.rankme, True,
               "Garrido et al. 2023, ICML, 'RankMe: assessing the downstream performance of pretrained "
               "self-supervised representations by their rank'", "set", "spectral",
               "exp entropy of normalised singular values of the uncentred data, p + 1e-7"),
    MetricInfo("stable_rank", spectral.stable_rank, True, "Rudelson & Vershynin 2007, J. ACM", "set",
               "spectral", "sum of covariance eigenvalues / largest eigenvalue (centred)"),
    MetricInfo("participation_ratio", spectral.participation_ratio, True,
               "Gao et al. 2017, bioRxiv, 'A theory of multineuronal dimensionality'", "set", "spectral",
               "(sum lambda)^2 / sum lambda^2 of covariance eigenvalues"),
    MetricInfo("spectral_entropy", spectral.spectral_entropy, True, "Shannon entropy of the PCA spectrum",
               "set", "spectral", "entropy (nats) of normalised covariance eigenvalues", {"normalize": False}),
    MetricInfo("rank_at_variance", spectral.rank_at_variance, True, "PCA explained variance", "set",
               "spectral", "number of principal components explaining 90% of the variance", {"q": 0.9}),
    MetricInfo("alpha_req", spectral.alpha_req, None,
               "Agrawal et al. 2022, NeurIPS, 'alpha-ReQ: assessing representation quality in self-supervised"
               " learning by measuring eigenspectrum decay'", "set", "spectral",
               "power-law exponent of the covariance eigenspectrum (1/k-weighted log-log fit, ranks 2..rank/2)",
               {"window": None}, _alpha),
    MetricInfo("alpha_req_r2", spectral.alpha_req, None, "Agrawal et al. 2022, NeurIPS", "set", "spectral",
               "R^2 of the alpha-ReQ power-law fit in log-log space", {"window": None},
               _alpha_r2),
    MetricInfo("isoscore", spectral.isoscore, True,
               "Rudman et al. 2022, ACL Findings, 'IsoScore: measuring the uniformity of embedding space "
               "utilization'", "set", "spectral", "isotropy of the covariance eigenvalues, in [0, 1]"),
    MetricInfo("linear_cka", cross.linear_cka, None,
               "Kornblith et al. 2019, ICML, 'Similarity of neural network representations revisited'",
               "cross", "generic", "linear centred kernel alignment between two models", {"debiased": False}),
    MetricInfo("linear_cka_debiased", cross.linear_cka, None, "Kornblith et al. 2019; Song et al. 2012",
               "cross", "generic", "linear CKA with unbiased HSIC estimators", {"debiased": True}),
    MetricInfo("knn_overlap", cross.knn_overlap, None,
               "Huh et al. 2024, ICML, 'The platonic representation hypothesis' (mutual k-NN)", "cross",
               "generic", "mean fraction of shared 10 nearest neighbours (cosine)",
               {"k": 10, "metric": "cosine"}),
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
