"""Input validation shared by every public metric.

Public metric functions call :func:`as_matrix` once; the private cores after it assume a clean, finite,
floating-point 2-D tensor (the scikit-learn split between ``check_array`` and the estimator).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

_FLOAT_UPCAST = {torch.float16: torch.float32, torch.bfloat16: torch.float32}


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
) -> torch.Tensor:
    """Validate ``x`` as an (n, d) floating-point matrix and return it as a torch tensor.

    Accepts numpy arrays, torch tensors (any device; gradients are detached) and nested lists. float16 and
    bfloat16 are upcast to float32 (computed, never rejected); float32 and float64 are kept as they are.
    Raises ValueError naming ``name`` for: a shape that is not 2-D, fewer than ``min_rows`` rows, zero columns,
    integer/bool/complex dtypes, NaN or inf values, and (with ``nonzero_rows``) rows of zero norm.
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
    return t


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
