"""Post-processing of embeddings toward isotropy, fitted on the analysed set itself.

``--postprocess`` (sentence analysis: :class:`embedgeom.options.AnalysisOptions`; token analysis:
:func:`embedgeom.tokens`) takes one of:

* ``none`` (default): the vectors as the encoder gives them.
* ``standardize``: each dimension minus its mean, divided by its standard deviation (population, over the analysed
  set); a dimension that does not vary is only centred. Timkey & van Schijndel (2021) show this removes the rogue
  dimensions that dominate cosine similarity.
* ``abtt:K`` ("all-but-the-top", Mu & Viswanath 2018): the mean removed, then the projections on the top K
  principal directions of the centred set removed. 1 <= K < d.
* ``whiten`` (BERT-whitening, Su et al. 2021): ``(x - mean) @ U diag(lambda)^(-1/2)`` with ``U, lambda`` the
  eigenvectors and eigenvalues of the covariance (population, float64); directions whose eigenvalue is at or below
  the numerical-rank tolerance are dropped (the output has the covariance's rank as its dimension), so the
  whitened set has identity covariance. No dimension reduction beyond that (Su et al.'s ``k`` is not applied).

Every transform is fitted on the set it is applied to (the analysed texts of one task, per layer; for tokens, all
non-special token states of the analysed texts at that layer) from float64 moments, and returns float32. The
embedding cache always holds the raw vectors; the post-processing is applied after it, and is recorded in every
result (``options.postprocess``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

#: The post-processing kinds (``abtt`` takes ``:K``).
POSTPROCESS_KINDS = ("none", "standardize", "abtt", "whiten")
POSTPROCESS_DEFINITIONS = {
    "none": "the encoder's vectors as they are",
    "standardize": "per dimension: minus the mean, divided by the population standard deviation (Timkey & van "
                   "Schijndel 2021); a constant dimension is only centred",
    "abtt": "all-but-the-top (Mu & Viswanath 2018): mean removed, then the projections on the top K principal "
            "directions removed",
    "whiten": "BERT-whitening (Su et al. 2021): (x - mean) U diag(lambda)^-1/2 from the covariance's "
              "eigendecomposition; numerically null directions dropped",
}
_SPEC = re.compile(r"^(none|standardize|whiten|abtt:(\d+))$")


@dataclass(frozen=True)
class PostprocessSpec:
    """A validated post-processing choice: ``kind`` and, for ``abtt``, the number ``k`` of top directions."""

    kind: str
    k: int = 0

    def __str__(self) -> str:
        return f"abtt:{self.k}" if self.kind == "abtt" else self.kind

    @property
    def definition(self) -> str:
        text = POSTPROCESS_DEFINITIONS[self.kind]
        return text.replace("top K", f"top {self.k}") if self.kind == "abtt" else text


def parse_postprocess(value: Any, option: str = "postprocess") -> PostprocessSpec:
    """``none``, ``standardize``, ``abtt:K`` (K >= 1) or ``whiten`` -> a :class:`PostprocessSpec`; anything else is
    one ValueError naming the option, the valid choices and what was given."""
    if isinstance(value, PostprocessSpec):
        return value
    m = _SPEC.match(value.strip()) if isinstance(value, str) else None
    if m is None or (m.group(2) is not None and int(m.group(2)) < 1):
        raise ValueError(f"{option}: expected none, standardize, abtt:K (K an integer >= 1, e.g. abtt:3) or whiten, "
                         f"got {value!r}.")
    return PostprocessSpec("abtt", int(m.group(2))) if m.group(2) else PostprocessSpec(m.group(1))


def check_postprocess(value: Any, option: str = "postprocess") -> str:
    """The canonical spelling of a valid post-processing spec (what options record)."""
    return str(parse_postprocess(value, option))


@dataclass(frozen=True)
class Postprocessor:
    """A fitted post-processing: ``transform(x) = ((x - mean) @ matrix) * scale`` (``matrix`` None: identity;
    ``scale`` None: 1), in float64, returned as float32."""

    spec: PostprocessSpec
    mean: np.ndarray | None = None
    matrix: np.ndarray | None = None
    scale: np.ndarray | None = None

    def transform(self, x: Any) -> np.ndarray:
        a = np.asarray(x, dtype=np.float64)
        if self.spec.kind == "none":
            return np.asarray(x, dtype=np.float32)
        if a.ndim != 2 or self.mean is None or a.shape[1] != self.mean.shape[0]:
            raise ValueError(f"x: expected an (n, {0 if self.mean is None else self.mean.shape[0]}) array like the "
                             f"set the {self.spec} post-processing was fitted on, got shape {a.shape}.")
        out = a - self.mean
        if self.matrix is not None:
            out = out @ self.matrix
        if self.scale is not None:
            out = out * self.scale
        return out.astype(np.float32)


def fit_from_moments(spec: Any, n: int, mean: np.ndarray, cov: np.ndarray) -> Postprocessor:
    """Fit ``spec`` from the mean (d,) and the population covariance (d, d) of n rows (float64)."""
    sp = parse_postprocess(spec)
    d = mean.shape[0]
    if sp.kind == "none":
        return Postprocessor(sp)
    if n < 2:
        raise ValueError(f"x: expected at least 2 rows to fit the {sp} post-processing, got {n}.")
    if sp.kind == "standardize":
        std = np.sqrt(np.clip(np.diag(cov), 0.0, None))
        return Postprocessor(sp, mean, None, np.where(std > 0, 1.0 / np.where(std > 0, std, 1.0), 1.0))
    if sp.kind == "abtt" and sp.k >= d:
        raise ValueError(f"postprocess: expected abtt:K with K below the dimension d = {d}, got {sp}. Pass a smaller "
                         "K (Mu & Viswanath use about d/100).")
    ev, vec = np.linalg.eigh((cov + cov.T) / 2.0)
    order = np.argsort(ev)[::-1]
    ev, vec = np.clip(ev[order], 0.0, None), vec[:, order]
    if sp.kind == "abtt":
        top = vec[:, : sp.k]
        return Postprocessor(sp, mean, np.eye(d) - top @ top.T)
    tol = ev[0] * max(n, d) * 10 * float(np.finfo(np.float64).eps) if ev.size and ev[0] > 0 else math.inf
    keep = ev > tol
    if not keep.any():
        raise ValueError("x: expected rows that vary, got a set with zero covariance; whitening is undefined.")
    return Postprocessor(sp, mean, vec[:, keep] / np.sqrt(ev[keep]))


def fit_postprocess(spec: Any, x: Any) -> Postprocessor:
    """Fit ``spec`` on the (n, d) set ``x`` (float64 moments)."""
    sp = parse_postprocess(spec)
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2 or not np.isfinite(a).all():
        raise ValueError(f"x: expected a finite (n, d) array to fit the {sp} post-processing, got shape {a.shape}.")
    mean = a.mean(axis=0)
    c = a - mean
    return fit_from_moments(sp, a.shape[0], mean, c.T @ c / a.shape[0])


def apply_postprocess(spec: Any, x: Any) -> np.ndarray:
    """``x`` post-processed by ``spec``, fitted on ``x`` itself (``none`` returns ``x`` unchanged)."""
    sp = parse_postprocess(spec)
    if sp.kind == "none":
        return x
    return fit_postprocess(sp, x).transform(x)
