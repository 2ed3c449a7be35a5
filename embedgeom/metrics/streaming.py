"""Streaming accumulators: spectra of 10M embeddings or of a multi-GPU run in O(d^2) memory."""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch

from ._validate import CollapsedEmbeddingsWarning, _caller_stacklevel, as_matrix, spread_reason
from .moments import Moments, Spectrum, merge_moments, moments_of, spectrum_from_moments


class SpectralAccumulator:
    """Running float64 moments (n, mean, centred scatter M2) of every row seen, for the spectral metrics.

    ``update(batch)`` folds in a batch, ``merge(other)`` folds in another accumulator (another shard or
    process), ``spectrum()`` returns the same :class:`~embedgeom.metrics.moments.Spectrum` that the
    functional metrics compute on the concatenated rows, and ``compute()`` gives every spectral metric.
    Batches merge with Chan et al.'s pairwise update, which is exact and avoids the cancellation of
    ``sum(x x^T) - n mean mean^T`` when embeddings share a large common mean.

    Memory: d + d^2 float64 on the device of the first batch. For torch.distributed, ``all_reduce()``
    gathers every rank's moments and merges them in rank order, so every rank ends with identical state.

    Example::

        acc = SpectralAccumulator()
        for batch in batches:
            acc.update(batch)
        acc.compute()["effective_rank"]
    """

    def __init__(self) -> None:
        self._m: Moments | None = None

    @property
    def n(self) -> int:
        return 0 if self._m is None else self._m.n

    @property
    def dim(self) -> int | None:
        return None if self._m is None else self._m.dim

    def update(self, x: Any) -> SpectralAccumulator:
        """Fold an (b, d) batch into the running moments. Returns self."""
        xb = as_matrix(x, "x", min_rows=1, check_collapse=False)  # a batch may be tiny; spectrum() checks all rows
        if self._m is not None and xb.shape[1] != self._m.dim:
            raise ValueError(f"x: expected batches of dimension {self._m.dim} like the earlier ones, got "
                             f"{xb.shape[1]}. Use one accumulator per model/pooling.")
        part = moments_of(xb)
        self._m = part if self._m is None else merge_moments(self._m, part)
        return self

    def merge(self, other: SpectralAccumulator) -> SpectralAccumulator:
        """Fold another accumulator's rows into this one. Returns self."""
        if not isinstance(other, SpectralAccumulator):
            raise ValueError(f"other: expected a SpectralAccumulator, got {type(other).__name__}.")
        if other._m is None:
            return self
        if self._m is not None and other._m.dim != self._m.dim:
            raise ValueError(f"other: expected dimension {self._m.dim}, got {other._m.dim}. Only merge "
                             "accumulators of the same model and pooling.")
        self._m = other._m if self._m is None else merge_moments(self._m, other._m)
        return self

    def state_dict(self) -> dict[str, Any]:
        """Plain tensors and numbers (safe to save with safetensors/torch.save or send between processes)."""
        if self._m is None:
            return {"n": 0}
        return {"n": self._m.n, "mean": self._m.mean.cpu(), "m2": self._m.m2.cpu(), "eps": self._m.eps}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> SpectralAccumulator:
        acc = cls()
        if int(state.get("n", 0)) > 0:
            mean = torch.as_tensor(state["mean"], dtype=torch.float64)
            m2 = torch.as_tensor(state["m2"], dtype=torch.float64)
            if mean.ndim != 1 or m2.shape != (mean.shape[0], mean.shape[0]):
                raise ValueError(f"state: expected mean (d,) and m2 (d, d), got {tuple(mean.shape)} and "
                                 f"{tuple(m2.shape)}.")
            acc._m = Moments(int(state["n"]), mean, m2, float(state["eps"]))
        return acc

    def all_reduce(self, group: Any = None) -> SpectralAccumulator:
        """Merge the moments of every rank of ``torch.distributed`` (in rank order) into every rank."""
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError("all_reduce: torch.distributed is not initialised; call "
                               "torch.distributed.init_process_group first (or use merge()).")
        if self._m is None:
            raise RuntimeError("all_reduce: this rank has seen no rows; update() before reducing.")
        d = self._m.dim
        flat = torch.cat([torch.tensor([float(self._m.n), self._m.eps], dtype=torch.float64,
                                       device=self._m.mean.device), self._m.mean, self._m.m2.flatten()])
        parts = [torch.empty_like(flat) for _ in range(dist.get_world_size(group))]
        dist.all_gather(parts, flat, group=group)
        merged: Moments | None = None
        for p in parts:
            m = Moments(int(p[0].item()), p[2 : 2 + d], p[2 + d :].reshape(d, d), float(p[1].item()))
            if m.n == 0:
                continue
            merged = m if merged is None else merge_moments(merged, m)
        self._m = merged
        return self

    def moments(self) -> Moments:
        if self._m is None:
            raise RuntimeError("SpectralAccumulator: no rows yet; call update() first.")
        return self._m

    def spectrum(self) -> Spectrum:
        """The covariance and second-moment spectrum of all rows seen. Warns
        :class:`~embedgeom.metrics.CollapsedEmbeddingsWarning` when the rows seen are collapsed (identical to
        float32 rounding level, :data:`~embedgeom.metrics.COLLAPSE_TOL`)."""
        m = self.moments()
        if m.n >= 2:
            trace = float(torch.trace(m.m2))
            reason = spread_reason(math.sqrt(max(trace, 0.0) / (m.n - 1)),
                                   math.sqrt((trace + m.n * float(m.mean @ m.mean)) / m.n), m.n)
            if reason is not None:
                warnings.warn(reason + ".", CollapsedEmbeddingsWarning, stacklevel=_caller_stacklevel())
        return spectrum_from_moments(m)

    def compute(self) -> dict[str, float]:
        """Every spectral metric of the REGISTRY on all rows seen, plus ``n``."""
        from .registry import REGISTRY

        sp = self.spectrum()
        out: dict[str, float] = {"n": float(sp.n)}
        for name, info in REGISTRY.items():
            if info.family == "spectral":
                out[name] = info(sp)
        return out
