"""Input validation shared by every public metric.

Public metric functions call :func:`as_matrix` once; the private cores after it assume a clean, finite,
floating-point 2-D tensor (the scikit-learn split between ``check_array`` and the estimator).
"""

from __future__ import annotations

import contextlib
import math
import sys
import warnings
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

import numpy as np
import torch

_FLOAT_UPCAST = {torch.float16: torch.float32, torch.bfloat16: torch.float32}

#: Rows are *collapsed* when their spread around their mean, ``sqrt(sum_j var_j)``, is at most this fraction of
#: their root-mean-square norm: every per-dimension standard deviation is then below 1e-6 of the norm, the level
#: of float32 rounding (eps 1.2e-7) of vectors that are all the same, so any geometry of them is rounding noise.
COLLAPSE_TOL = 1e-6
_CHUNK = 16384
_CHECK_COLLAPSE: ContextVar[bool] = ContextVar("embedgeom_check_collapse", default=True)


class CollapsedEmbeddingsWarning(UserWarning):
    """The embeddings are identical, or differ only at float32 rounding level (see :data:`COLLAPSE_TOL`)."""


def _fail(name: str, expected: str, got: str, fix: str) -> ValueError:
    return ValueError(f"{name}: expected {expected}, got {got}. {fix}")


def _to_tensor(x: Any, name: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach()
    if isinstance(x, np.ndarray):
        if x.dtype == object:
            raise _fail(name, "a numeric array", "an object array", "Stack the vectors with np.stack(...).")
        if not x.flags.writeable or not (x.flags.c_contiguous or x.flags.f_contiguous):
            x = np.ascontiguousarray(x)
        return torch.from_numpy(x)
    if hasattr(x, "__array__") or isinstance(x, (list, tuple)):
        try:
            arr = np.asarray(x)
        except (TypeError, ValueError) as err:
            raise _fail(name, "an (n, d) array", f"{type(x).__name__} that numpy cannot convert ({err})",
                        "Pass a numpy array or torch tensor.") from None
        if arr.dtype == object:
            raise _fail(name, "an (n, d) numeric array", "ragged or non-numeric rows",
                        "Make every row the same length.")
        return torch.from_numpy(np.ascontiguousarray(arr))
    raise _fail(name, "a numpy array or torch tensor of shape (n, d)", type(x).__name__,
                "Convert your embeddings with np.asarray(...) or torch.as_tensor(...).")


def as_matrix(
    x: Any,
    name: str = "x",
    *,
    min_rows: int = 2,
    nonzero_rows: bool = False,
    check_collapse: bool = True,
) -> torch.Tensor:
    """Validate ``x`` as an (n, d) floating-point matrix and return it as a torch tensor.

    Accepts numpy arrays, torch tensors (any device; gradients are detached) and nested lists. float16 and
    bfloat16 are upcast to float32 (computed, never rejected); float32 and float64 are kept as they are.
    Raises ValueError naming ``name`` for: a shape that is not 2-D, fewer than ``min_rows`` rows, zero columns,
    integer/bool/complex dtypes, NaN or inf values, and (with ``nonzero_rows``) rows of zero norm. With
    ``check_collapse`` (default), warns :class:`CollapsedEmbeddingsWarning` when the rows are collapsed
    (:func:`warn_if_collapsed`).
    """
    t = _to_tensor(x, name)
    if t.ndim != 2:
        raise _fail(name, "a 2-D (n, d) array with one embedding per row", f"shape {tuple(t.shape)}",
                    "Reshape to (n, d), e.g. x.reshape(len(x), -1).")
    if t.is_complex():
        raise _fail(name, "real floating-point values", f"complex dtype {t.dtype}", "Pass the real part.")
    if not t.is_floating_point():
        raise _fail(name, "floating-point embeddings", f"dtype {t.dtype}",
                    "Convert with x.astype(np.float32) / x.float(); integer arrays are usually token ids, "
                    "not embeddings.")
    if t.dtype in _FLOAT_UPCAST:
        t = t.to(_FLOAT_UPCAST[t.dtype])
    n, d = t.shape
    if n < min_rows:
        raise _fail(name, f"at least {min_rows} rows (embeddings)", f"{n}", "Pass more texts.")
    if d < 1:
        raise _fail(name, "at least one column (embedding dimension)", "0 columns", "Check the encoder output.")
    finite = torch.isfinite(t).all(dim=1)
    if not bool(finite.all()):
        bad = torch.nonzero(~finite).flatten()
        first = ", ".join(str(int(i)) for i in bad[:5])
        raise _fail(name, "finite values", f"NaN or inf in {bad.numel()} of {n} rows (first: {first})",
                    "Drop or repair those rows before computing metrics.")
    if nonzero_rows:
        norms = torch.linalg.vector_norm(t, dim=1)
        zero = norms <= torch.finfo(t.dtype).tiny
        if bool(zero.any()):
            bad = torch.nonzero(zero).flatten()
            first = ", ".join(str(int(i)) for i in bad[:5])
            raise _fail(name, "rows with non-zero norm (they are L2-normalised)",
                        f"{bad.numel()} zero rows (first: {first})",
                        "Drop the zero rows; a zero vector has no direction.")
    if check_collapse:
        warn_if_collapsed(t, name)
    return t


def collapse_reason(t: torch.Tensor, name: str = "x") -> str | None:
    """Why the rows of a validated (n, d) matrix are collapsed, or None when they are not (or n < 2).

    Collapsed: the spread ``sqrt(sum_j var_j)`` (sample variances, float64) is at most :data:`COLLAPSE_TOL` times
    the root-mean-square row norm; all-zero and all-identical rows are collapsed."""
    n = int(t.shape[0])
    if n < 2:
        return None
    dev = torch.device("cpu") if t.device.type == "mps" else t.device  # MPS has no float64
    chunks = [t[start : start + _CHUNK] for start in range(0, n, _CHUNK)]
    mean = sum(c.to(device=dev, dtype=torch.float64).sum(dim=0) for c in chunks) / n
    dev2 = 0.0
    norm2 = 0.0
    for c in chunks:  # two passes: the spread is a tiny difference of large numbers exactly when it matters
        b = c.to(device=dev, dtype=torch.float64)
        dev2 += float(((b - mean) ** 2).sum())
        norm2 += float((b * b).sum())
    spread, norm = math.sqrt(dev2 / (n - 1)), math.sqrt(norm2 / n)
    return spread_reason(spread, norm, n, name)


def spread_reason(spread: float, norm: float, n: int, name: str = "x") -> str | None:
    """:func:`collapse_reason` from the spread ``sqrt(sum_j var_j)`` and the root-mean-square norm of n rows."""
    if spread > COLLAPSE_TOL * norm:
        return None
    if spread == 0.0:
        what = f"all {n} rows are identical (zero spread)"
    else:
        what = (f"all {n} rows are collapsed: their spread around their mean is {spread / norm:.2g} of their norm, "
                f"below {COLLAPSE_TOL:g} (float32 rounding level)")
    return (f"{name}: {what}, so no geometry metric of them describes the encoder. Check the encoder and "
            "pooling: every text got (nearly) the same embedding")


def _caller_stacklevel() -> int:
    """The stacklevel of the first frame outside embedgeom.metrics (the user's call), for warnings.warn."""
    level, frame = 1, sys._getframe(1)
    while frame is not None and frame.f_globals.get("__name__", "").startswith("embedgeom.metrics"):
        frame = frame.f_back  # type: ignore[assignment]
        level += 1
    return level


def warn_if_collapsed(t: torch.Tensor, name: str = "x") -> str | None:
    """Warn :class:`CollapsedEmbeddingsWarning` (once per public call, see :func:`collapse_checked`) when the rows
    of ``t`` are collapsed; returns the reason (None when they are not, or inside an already checked call)."""
    if not _CHECK_COLLAPSE.get():
        return None
    reason = collapse_reason(t, name)
    if reason is not None:
        warnings.warn(reason + ".", CollapsedEmbeddingsWarning, stacklevel=_caller_stacklevel())
    return reason


@contextlib.contextmanager
def collapse_checked() -> Iterator[None]:
    """Inside: no further collapse checks (the public entry point already checked its inputs once)."""
    token = _CHECK_COLLAPSE.set(False)
    try:
        yield
    finally:
        _CHECK_COLLAPSE.reset(token)


def same_rows(x: torch.Tensor, y: torch.Tensor, xname: str, yname: str, *, same_dim: bool) -> None:
    """Check that two validated matrices describe the same texts (and, if asked, live in the same space)."""
    if x.shape[0] != y.shape[0]:
        raise _fail(yname, f"{x.shape[0]} rows, one per row of {xname} (the same texts, same order)",
                    f"{y.shape[0]} rows", "Encode the same texts for both inputs.")
    if same_dim and x.shape[1] != y.shape[1]:
        raise _fail(yname, f"dimension {x.shape[1]} like {xname}", f"dimension {y.shape[1]}",
                    "Pair embeddings from the same model and pooling.")


def check_choice(name: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise _fail(name, f"one of {choices}", repr(value), "Pick one of the listed values.")


def check_positive(name: str, value: Any, *, integer: bool = False, allow_zero: bool = False) -> None:
    kind = "integer" if integer else "number"
    ok_type = isinstance(value, (int, np.integer)) and not isinstance(value, bool) if integer else (
        isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool))
    if not ok_type or not np.isfinite(value) or (value < 0 if allow_zero else value <= 0):
        bound = ">= 0" if allow_zero else "> 0"
        raise _fail(name, f"a finite {kind} {bound}", repr(value), f"Pass a {kind} {bound}.")


def match_device(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return y if y.device == x.device else y.to(x.device)
