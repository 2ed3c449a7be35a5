"""Registry-wide bad input: one clear ValueError naming the argument; never a silent NaN."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from embedgeom import metrics as M

ALL = list(M.REGISTRY)


def call(name: str, x, y=None):
    info = M.REGISTRY[name]
    if info.kind == "set":
        return info(x)
    return info(x, np.asarray(x) if y is None else y)


def good(n: int = 20, d: int = 6) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((n, d))


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize(
    ("bad", "pattern"),
    [
        (np.ones(10), "2-D"),
        (np.ones((3, 4, 5)), "2-D"),
        (np.ones((1, 4)), "at least"),
        (np.arange(40).reshape(10, 4), "floating-point"),
        (np.ones((10, 4), dtype=bool), "floating-point"),
        (np.ones((10, 4), dtype=np.complex64), "complex"),
        ("not an array", "array"),
    ],
)
def test_bad_shapes_and_dtypes(name, bad, pattern):
    if name == "alignment" and pattern == "at least":
        assert call(name, bad, bad + 1.0) == pytest.approx(0.0)  # one positive pair is a valid mean
        return
    with pytest.raises(ValueError, match=pattern) as err:
        call(name, bad, bad if M.REGISTRY[name].kind != "set" else None)
    assert str(err.value).split(":")[0] in {"x", "y"}  # names the argument first


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_rows_are_named(name, value):
    x = good()
    x[[3, 11]] = value
    with pytest.raises(ValueError, match=r"x: expected finite values, got NaN or inf in 2 of 20 rows \(first: 3, 11\)"):
        call(name, x)


@pytest.mark.parametrize("name", [n for n, e in M.REGISTRY.items() if e.kind != "set"])
def test_mismatched_rows(name):
    with pytest.raises(ValueError, match="y: expected 20 rows"):
        M.REGISTRY[name](good(), good(n=19))


def test_alignment_needs_same_dimension():
    with pytest.raises(ValueError, match="dimension 6"):
        M.alignment(good(), good(d=5))


@pytest.mark.parametrize("name", ["uniformity", "alignment", "mean_cosine", "knn_overlap"])
def test_zero_rows_where_normalisation_is_needed(name):
    x = good()
    x[4] = 0.0
    with pytest.raises(ValueError, match="non-zero norm"):
        call(name, x, good())


@pytest.mark.parametrize("name", [n for n, e in M.REGISTRY.items() if e.family == "spectral"])
def test_constant_data_is_an_error_not_a_nan(name):
    with pytest.raises(ValueError, match="zero covariance"), pytest.warns(M.CollapsedEmbeddingsWarning):
        M.REGISTRY[name](np.ones((10, 4)))


def test_cka_constant_data_is_an_error():
    with pytest.raises(ValueError, match="zero variance"), pytest.warns(M.CollapsedEmbeddingsWarning):
        M.linear_cka(np.ones((10, 4)), good(n=10))


@pytest.mark.parametrize("name", ALL)
def test_half_precision_is_computed_not_rejected(name):
    x = good(n=64, d=8)
    if name in ("alpha_req", "alpha_req_r2"):
        x = x @ np.diag(np.linspace(0.2, 3, 8))
    ref = call(name, x.astype(np.float32))
    for half in (torch.from_numpy(x).half(), torch.from_numpy(x).bfloat16(), x.astype(np.float16)):
        got = call(name, half, half if M.REGISTRY[name].kind != "set" else None)
        assert math.isfinite(got)
        assert got == pytest.approx(ref, rel=0.05, abs=0.05), name


def test_results_are_finite_for_valid_input():
    x = good(n=50, d=10)
    for name in ALL:
        assert math.isfinite(call(name, x, x + 0.01)), name


def test_option_errors_name_the_option():
    x = good()
    with pytest.raises(ValueError, match="t: expected a finite number > 0"):
        M.uniformity(x, t=0)
    with pytest.raises(ValueError, match="method: expected one of"):
        M.uniformity(x, method="fast")
    with pytest.raises(ValueError, match="n_pairs"):
        M.uniformity(x, method="sampled", n_pairs=0)
    with pytest.raises(ValueError, match="q: expected"):
        M.rank_at_variance(x, 1.5)
    with pytest.raises(ValueError, match="k: expected an integer between 1 and n - 1 = 19"):
        M.knn_overlap(x, x, k=20)
    with pytest.raises(ValueError, match="metric: expected one of"):
        M.knn_overlap(x, x, metric="manhattan")
    with pytest.raises(ValueError, match="metric: expected one of"):
        M.confidence_interval("nope", x)
    with pytest.raises(ValueError, match="confidence"):
        M.confidence_interval("uniformity", x, confidence=95)
    with pytest.raises(ValueError, match="groups: expected at most n = 20"):
        M.confidence_interval("effective_rank", x, groups=50)
    with pytest.raises(ValueError, match="expected 2 embedding array"):
        M.confidence_interval("linear_cka", x)


def test_input_is_never_modified():
    x = good()
    x32 = torch.from_numpy(x.astype(np.float32))
    before_np, before_t = x.copy(), x32.clone()
    for name in ALL:
        call(name, x)
        call(name, x32)
    np.testing.assert_array_equal(x, before_np)
    assert torch.equal(x32, before_t)


def test_registry_entries_are_complete():
    for name, info in M.REGISTRY.items():
        assert info.name == name
        assert info.kind in ("set", "paired", "cross")
        assert info.family in ("spectral", "pair", "rowmean", "generic")
        assert info.reference and info.description
        assert info.function.__doc__ and len(info.function.__doc__) > 80


def test_matmul_precision_option():
    x = good(n=50)
    assert M.uniformity(x, matmul_precision="high") == pytest.approx(M.uniformity(x), abs=1e-12)  # CPU: no-op
    with pytest.raises(ValueError, match="matmul_precision"):
        M.uniformity(x, matmul_precision="low")
