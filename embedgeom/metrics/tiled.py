"""The registry's single-set metrics with their jackknife intervals on a row set read block by block.

:func:`streamed_intervals` gives the same numbers as :func:`~embedgeom.metrics.confidence_intervals` on the whole
array (same definitions, same seeded delete-a-group split, same exact delete-one jackknife for the pair metrics),
but never holds more than two blocks of rows: the set is a :class:`RowSource` (a memory-mapped file, spilled
vectors, an in-memory array) read in row blocks.

* **Spectral metrics**: one pass accumulates float64 moments (n, mean, centred scatter) per jackknife group
  (Chan et al.'s exact merge); the full and leave-one-group-out spectra come from merged group moments. Memory
  O(G d^2).
* **Uniformity** (exact): every pair i < j, walked as pairs of row blocks; each block pair is one matrix product
  in the rows' precision with sums accumulated in float64, plus the per-row kernel sums the exact delete-one
  jackknife needs (O(n) float64). Data read: about n^2 / (2 * block) rows, so time grows as n^2.
* **Mean cosine** (exact): the float64 sum S of the unit rows (first pass), then each row's sum of cosines
  ``z_i . S - z_i . z_i`` (second pass), O(n d).
* **Distributed** (``distributed=True`` under an initialised :mod:`torch.distributed` group, e.g. ``torchrun``):
  every rank reads the same source (a shared file); blocks are dealt round-robin to ranks, group moments are
  gathered and merged in rank order, pair sums and per-row sums are all-reduced in float64. Every rank returns
  the same intervals. Results equal the single-process ones to float64 rounding of the merge order (and float32
  rounding of the block products, whose shapes differ from the in-memory kernel's tiles).

Sets too small for the moment path (fewer rows left in a replicate than dimensions) are read whole and handed to
:func:`~embedgeom.metrics.confidence_intervals` (then they are small).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ._kernels import default_tile, gaussian_cross_sums, gaussian_pair_sums, l2_normalise
from ._validate import as_matrix, spread_reason
from .estimates import Interval
from .jackknife import interval, split_groups
from .moments import Moments, merge_moments, moments_of, spectrum_from_moments
from .registry import get_metric
from .uncertainty import DEFAULT_GROUPS, _check_options, _leave_one_out_moments

#: Rows per block unless told otherwise: 4096 x d float32 (4 MiB at d = 256) per block, two blocks in memory.
DEFAULT_BLOCK = 4096


@dataclass(frozen=True)
class RowSource:
    """``n`` rows of dimension ``d`` read in blocks: ``read(a, b)`` returns rows ``a:b`` (numpy or torch,
    float32 or float64); ``take(index)`` (optional) returns the rows at a sorted index array."""

    n: int
    d: int
    read: Callable[[int, int], Any]
    take: Callable[[np.ndarray], Any] | None = None

    @classmethod
    def of_array(cls, x: Any) -> RowSource:
        """A source over an in-memory or memory-mapped (n, d) array (nothing is copied until read)."""
        if not hasattr(x, "shape") or len(x.shape) != 2:
            raise ValueError(f"x: expected an (n, d) array, got {type(x).__name__} of shape "
                             f"{getattr(x, 'shape', None)}. Reshape to one row per embedding.")
        return cls(int(x.shape[0]), int(x.shape[1]), lambda a, b: x[a:b], lambda idx: x[idx])

    def blocks(self, block: int) -> Iterator[tuple[int, int]]:
        for a in range(0, self.n, block):
            yield a, min(a + block, self.n)


def _rows(source: RowSource, a: int, b: int, device: torch.device | None = None) -> torch.Tensor:
    """Rows ``a:b`` validated (finite, 2-D, float32/float64) as a tensor on ``device`` (default: CPU)."""
    block = source.read(a, b)
    if isinstance(block, np.ndarray) and not block.flags.writeable:
        block = np.array(block)  # a read-only memory map slice: copy this block (torch needs writeable memory)
    x = as_matrix(block, "x", min_rows=1, check_collapse=False)
    return x if device is None else x.to(device)


def _unit(source: RowSource, a: int, b: int, device: torch.device | None = None) -> torch.Tensor:
    return _unit_of(_rows(source, a, b, device), a)


def _unit_of(x: torch.Tensor, a: int) -> torch.Tensor:
    """Rows of a block starting at row ``a``, L2-normalised (a zero row is an error naming it)."""
    norms = torch.linalg.vector_norm(x, dim=1)
    if bool((norms == 0).any()):
        i = int(torch.nonzero(norms == 0)[0, 0]) + a
        raise ValueError(f"x: row {i} is all zeros, so it has no direction. Remove zero rows before measuring "
                         "alignment/uniformity/cosines.")
    return l2_normalise(x)


class _Dist:
    """This process's share of the work: everything when not distributed."""

    def __init__(self, distributed: bool, group: Any, device: torch.device) -> None:
        self.group = group
        self.device = device
        #: Where collectives run: the compute device when the group's backend has NCCL for it, else the CPU (gloo).
        self.comm = torch.device("cpu")
        self.on = False
        self.rank, self.world = 0, 1
        if distributed:
            import torch.distributed as dist

            if not (dist.is_available() and dist.is_initialized()):
                raise RuntimeError("distributed: torch.distributed is not initialised. Launch with torchrun (it "
                                   "sets the rendezvous) and call torch.distributed.init_process_group first, or "
                                   "pass distributed=False.")
            self.on = True
            self.rank, self.world = dist.get_rank(group), dist.get_world_size(group)
            if device.type == "cuda" and "nccl" in str(dist.get_backend(group)):
                self.comm = device

    def mine(self, k: int) -> bool:
        return k % self.world == self.rank

    def sum_(self, t: torch.Tensor) -> torch.Tensor:
        """Sum ``t`` over the ranks, in place (through the CPU when the backend has no NCCL for its device)."""
        if self.on:
            import torch.distributed as dist

            buf = t if t.device == self.comm else t.to(self.comm)
            dist.all_reduce(buf, op=dist.ReduceOp.SUM, group=self.group)
            if buf is not t:
                t.copy_(buf)
        return t

    def merged(self, parts: list[Moments | None], d: int) -> list[Moments | None]:
        """Each group's moments over every rank (merged in rank order)."""
        if not self.on:
            return parts
        import torch.distributed as dist

        g = len(parts)
        flat = torch.zeros(g, 2 + d + d * d, dtype=torch.float64, device=self.comm)
        for i, m in enumerate(parts):
            if m is not None:
                flat[i, 0], flat[i, 1] = float(m.n), m.eps
                flat[i, 2 : 2 + d] = m.mean.to(self.comm)
                flat[i, 2 + d :] = m.m2.flatten().to(self.comm)
        gathered = [torch.empty_like(flat) for _ in range(self.world)]
        dist.all_gather(gathered, flat, group=self.group)
        out: list[Moments | None] = [None] * g
        for rank_rows in gathered:
            for i in range(g):
                row = rank_rows[i]
                if int(row[0].item()) == 0:
                    continue
                m = Moments(int(row[0].item()), row[2 : 2 + d].clone(), row[2 + d :].reshape(d, d).clone(),
                            float(row[1].item()))
                out[i] = m if out[i] is None else merge_moments(out[i], m)  # type: ignore[arg-type]
        return out


def _group_moments(source: RowSource, group_of: np.ndarray, groups: int, block: int, dist: _Dist,
                   tick: Callable[[], None]) -> tuple[list[Moments | None], torch.Tensor]:
    """Per-group float64 moments and the float64 sum of the unit rows, in one pass over the blocks."""
    parts: list[Moments | None] = [None] * groups
    unit_sum = torch.zeros(source.d, dtype=torch.float64, device=dist.device)
    for k, (a, b) in enumerate(source.blocks(block)):
        if not dist.mine(k):
            continue
        x = _rows(source, a, b, dist.device)
        unit_sum += _unit_of(x, a).to(torch.float64).sum(dim=0)
        g_of = torch.as_tensor(group_of[a:b], device=dist.device)
        for g in torch.unique(g_of).tolist():
            m = moments_of(x[g_of == g])
            parts[g] = m if parts[g] is None else merge_moments(parts[g], m)  # type: ignore[arg-type]
        tick()
    return dist.merged(parts, source.d), dist.sum_(unit_sum)


def _block_gaussian(zi: torch.Tensor, zj: torch.Tensor, t: float, same: bool
                    ) -> tuple[float, torch.Tensor, torch.Tensor]:
    """Kernel sums of one block pair, exp(-t ||z_i - z_j||^2) summed per row of each block (float64), computed in
    the exact kernel's tiles (memory O(tile^2), not O(block^2)); on the diagonal block the pairs i < j, each row's
    sum over the others."""
    tile = default_tile(zi.device)
    if same:
        total, rows = gaussian_pair_sums(zi, t, tile=tile, row_sums=True)
        assert rows is not None
        return total, rows, rows
    return gaussian_cross_sums(zi, zj, t, tile=tile)


def _pair_sums(source: RowSource, t: float, block: int, dist: _Dist, unit_sum: torch.Tensor | None,
               want_gauss: bool, tick: Callable[[], None]) -> tuple[float, torch.Tensor | None, torch.Tensor | None]:
    """Gaussian pair total and per-row sums (uniformity) and per-row cosine sums (mean cosine), exact."""
    n, dev = source.n, dist.device
    g_rows = torch.zeros(n, dtype=torch.float64, device=dev) if want_gauss else None
    c_rows = torch.zeros(n, dtype=torch.float64, device=dev) if unit_sum is not None else None
    total = torch.zeros((), dtype=torch.float64, device=dev)
    spans = list(source.blocks(block))
    k = 0
    for bi, (a0, a1) in enumerate(spans):
        zi = None
        if c_rows is not None and dist.mine(bi):
            zi = _unit(source, a0, a1, dev)
            z64 = zi.to(torch.float64)
            c_rows[a0:a1] = z64 @ unit_sum - (z64 * z64).sum(dim=1)
        if want_gauss:
            for b0, b1 in spans[bi:]:
                if dist.mine(k):
                    zi = _unit(source, a0, a1, dev) if zi is None else zi
                    zj = zi if b0 == a0 else _unit(source, b0, b1, dev)
                    s, ri, rj = _block_gaussian(zi, zj, t, b0 == a0)
                    total += s
                    assert g_rows is not None
                    g_rows[a0:a1] += ri
                    if b0 != a0:
                        g_rows[b0:b1] += rj
                k += 1
        tick()
    if g_rows is not None:
        dist.sum_(total)
        dist.sum_(g_rows)
    if c_rows is not None:
        dist.sum_(c_rows)
    return (float(total), None if g_rows is None else g_rows.cpu(), None if c_rows is None else c_rows.cpu())


def streamed_intervals(names: Sequence[str], source: RowSource, **options: Any) -> dict[str, Interval]:
    """Every named single-set metric of ``source`` with its jackknife interval, reading the rows in blocks: the
    intervals of :func:`streamed_measure` (same keyword options), without the eigenspectrum."""
    return streamed_measure(names, source, **options)[0]


def streamed_measure(
    names: Sequence[str],
    source: RowSource,
    *,
    confidence: float = 0.95,
    groups: int = DEFAULT_GROUPS,
    seed: int = 0,
    options: dict[str, dict] | None = None,
    block: int = DEFAULT_BLOCK,
    distributed: bool = False,
    group: Any = None,
    progress: Callable[[int, int], None] | None = None,
    device: str | torch.device = "cpu",
) -> tuple[dict[str, Interval], np.ndarray]:
    """Every named single-set metric of ``source`` with its jackknife interval, and the covariance eigenvalues of
    the centred rows (descending, float64, length d, as :func:`~embedgeom.metrics.eigenspectrum` gives them), from
    the same passes over the blocks.

    Same numbers as :func:`~embedgeom.metrics.confidence_intervals` on the whole array (see the module docstring
    for what differs in rounding). ``block``: rows per block (memory: two blocks plus O(n) float64 per-row sums
    plus G + 2 d x d float64 matrices). ``distributed``: share the work across the ranks of ``group`` (every rank
    passes the same source). ``progress(done, total)`` is called after each block. ``device``: where the blocks
    are computed (block products in the rows' precision, sums in float64; collectives through the CPU unless the
    group's backend has NCCL for that device). A spectral metric that is
    undefined on the set comes back as a NaN interval whose method says why (as the in-memory analysis records
    it), instead of stopping the others."""
    if not isinstance(source, RowSource):
        raise ValueError(f"source: expected a RowSource, got {type(source).__name__}. Wrap an array with "
                         "RowSource.of_array(x).")
    if isinstance(block, bool) or not isinstance(block, int) or block < 1:
        raise ValueError(f"block: expected a positive number of rows, got {block!r}. Pass e.g. block=4096.")
    infos = [get_metric(nm) for nm in names]
    for info in infos:
        if info.kind != "set" or info.family not in ("spectral", "pair"):
            raise ValueError(f"names: expected single-set metrics (spectral or pair family), got {info.name!r} "
                             f"({info.kind}, {info.family}). Alignment needs positives; cross metrics two models.")
    options = options or {}
    n, d = source.n, source.d
    _check_options(confidence, groups, n, any(i.family == "spectral" for i in infos))
    if n < 3:
        raise ValueError(f"x: expected at least 3 rows for intervals, got {n}.")
    split = split_groups(n, groups, seed)
    if n - max(len(g) for g in split) < d:  # few rows: the moment path does not apply; the set is small
        from .spectral import eigenspectrum
        from .uncertainty import confidence_intervals

        whole = _rows(source, 0, n)
        return (confidence_intervals(list(names), whole, confidence=confidence, groups=groups, seed=seed,
                                     options=options), eigenspectrum(whole))
    dist = _Dist(distributed, group, torch.device(device))
    spectral = [i for i in infos if i.family == "spectral"]
    gauss = [i for i in infos if i.pair_kernel == "gaussian"]
    cosine = [i for i in infos if i.pair_kernel == "cosine"]
    n_blocks = math.ceil(n / block)
    total_steps = n_blocks * (2 if (gauss or cosine) else 1)
    done = [0]

    def tick() -> None:
        done[0] += 1
        if progress is not None:
            progress(done[0], total_steps)

    group_of = np.empty(n, dtype=np.int32)
    for g, idx in enumerate(split):
        group_of[idx] = g
    parts, unit_sum = _group_moments(source, group_of, groups, block, dist, tick)
    out: dict[str, Interval] = {}
    method = f"jackknife-delete-group ({groups} groups)"
    total_m, loo = _leave_one_out_moments([p for p in parts if p is not None])  # type: ignore[misc]
    eigenvalues = spectrum_from_moments(total_m, second=False).eigenvalues.copy()
    if spectral:
        trace = float(torch.trace(total_m.m2))
        reason = spread_reason(math.sqrt(max(trace, 0.0) / (n - 1)),
                               math.sqrt((trace + n * float(total_m.mean @ total_m.mean)) / n), n)
        note = "" if reason is None else "; collapsed input: " + reason.split(", so ")[0]
        second = any(i.name == "rankme" for i in spectral)
        full_sp = spectrum_from_moments(total_m, second=second)
        loo_sp = [spectrum_from_moments(m, second=second) for m in loo]
        for info in spectral:
            opts = options.get(info.name, {})
            try:
                value, reps = info(full_sp, **opts), np.array([info(sp, **opts) for sp in loo_sp])
            except ValueError as err:  # undefined on this set (e.g. a fit with too few non-zero eigenvalues)
                out[info.name] = Interval(math.nan, math.nan, math.nan, math.nan, n, float(confidence),
                                          f"undefined: {str(err).split('. ')[0]}", 0)
                continue
            bounds = None if info.bounds is None else info.bounds(n, d, {**info.kwargs, **opts})
            out[info.name] = interval(value, reps, n, confidence, method + note, bounds)
    if gauss or cosine:
        t = float({**(gauss[0].kwargs if gauss else {}), **options.get("uniformity", {})}.get("t", 2.0))
        total, g_rows, c_rows = _pair_sums(source, t, block, dist, unit_sum if cosine else None, bool(gauss), tick)
        pairs, pairs_loo = n * (n - 1) / 2, (n - 1) * (n - 2) / 2
        exact = "jackknife-delete-1 (exact, U-statistic row sums)"
        for info in gauss:
            assert g_rows is not None
            value = math.log(total / pairs)
            reps = np.log((total - g_rows.numpy()) / pairs_loo)
            bounds = info.bounds(n, d, {**info.kwargs, **options.get(info.name, {})}) if info.bounds else None
            out[info.name] = interval(value, reps, n, confidence, exact, bounds)
        for info in cosine:
            assert c_rows is not None
            c_total = float(c_rows.sum()) / 2.0
            reps = (c_total - c_rows.numpy()) / pairs_loo
            bounds = info.bounds(n, d, {**info.kwargs, **options.get(info.name, {})}) if info.bounds else None
            out[info.name] = interval(c_total / pairs, reps, n, confidence, exact, bounds)
    return {nm: out[nm] for nm in names}, eigenvalues


def streamed_moments(source: RowSource, *, block: int = DEFAULT_BLOCK, distributed: bool = False,
                     group: Any = None, device: str | torch.device = "cpu") -> Moments:
    """Float64 moments (n, mean, centred scatter) of every row of ``source``, in one pass over its blocks (shared
    across the ranks of ``group`` when ``distributed``; every rank gets the merged moments)."""
    dist = _Dist(distributed, group, torch.device(device))
    acc: Moments | None = None
    for k, (a, b) in enumerate(source.blocks(block)):
        if dist.mine(k):
            m = moments_of(_rows(source, a, b, dist.device))
            acc = m if acc is None else merge_moments(acc, m)
    merged = dist.merged([acc], source.d)[0]
    if merged is None:
        raise ValueError("x: expected at least one row, got 0.")
    return merged
