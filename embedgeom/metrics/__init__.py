"""Geometry metrics of embedding sets: exact, validated, on numpy arrays or torch tensors (CPU or GPU).

Every function takes an (n, d) array (one embedding per row) and returns plain floats / numpy. Importing
this package pulls in neither transformers nor matplotlib.

>>> from embedgeom import metrics as M
>>> M.uniformity(x), M.effective_rank(x), M.confidence_interval("uniformity", x)
"""

from ._validate import COLLAPSE_TOL, CollapsedEmbeddingsWarning
from .cross import knn_overlap, linear_cka
from .distance import EXACT_LIMIT, alignment, mean_cosine, uniformity
from .estimates import Estimate, Interval, PairedDifference, PowerLawFit
from .moments import Spectrum
from .registry import REGISTRY, MetricInfo, get_metric, names
from .spectral import (
    alpha_req,
    effective_rank,
    eigenspectrum,
    isoscore,
    participation_ratio,
    rank_at_variance,
    rankme,
    spectral_entropy,
    spectrum,
    stable_rank,
)
from .streaming import SpectralAccumulator
from .tokens import (
    TOKEN_METRICS,
    TokenMetricInfo,
    anisotropy,
    intra_similarity,
    mev,
    rogue_dimensions,
    self_similarity,
)
from .uncertainty import confidence_interval, confidence_intervals, paired_difference, paired_differences

__all__ = [
    "COLLAPSE_TOL",
    "EXACT_LIMIT",
    "REGISTRY",
    "TOKEN_METRICS",
    "CollapsedEmbeddingsWarning",
    "Estimate",
    "Interval",
    "MetricInfo",
    "PairedDifference",
    "PowerLawFit",
    "SpectralAccumulator",
    "Spectrum",
    "TokenMetricInfo",
    "alignment",
    "alpha_req",
    "anisotropy",
    "confidence_interval",
    "confidence_intervals",
    "effective_rank",
    "eigenspectrum",
    "get_metric",
    "intra_similarity",
    "isoscore",
    "knn_overlap",
    "linear_cka",
    "mean_cosine",
    "mev",
    "names",
    "paired_difference",
    "paired_differences",
    "participation_ratio",
    "rank_at_variance",
    "rankme",
    "rogue_dimensions",
    "self_similarity",
    "spectral_entropy",
    "spectrum",
    "stable_rank",
    "uniformity",
]
