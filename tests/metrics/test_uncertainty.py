"""Jackknife intervals: replicates equal brute-force recomputation; intervals cover closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest

from embedgeom import metrics as M
from embedgeom.metrics.uncertainty import _replicates, split_groups
from tests.fixtures import sphere_uniformity


@pytest.mark.parametrize("name", ["uniformity", "mean_cosine"])
def test_pair_jackknife_equals_delete_one_recomputation(rng, name):
    x = rng.standard_normal((40, 5)) + 0.3
    full, reps, method = _replicates(name, [x], 20, 0, {})
    assert "delete-1" in method and reps.size == 40
    brute = np.array([M.REGISTRY[name](np.delete(x, i, axis=0)) for i in range(40)])
    np.testing.assert_allclose(reps, brute, rtol=1e-10, atol=1e-12)
    assert full == pytest.approx(M.REGISTRY[name](x), abs=1e-12)


def test_alignment_jackknife_is_the_standard_error_of_the_mean(rng):
    x, y = rng.standard_normal((2, 200, 6))
    ci = M.confidence_interval("alignment", x, y)
    zx = x / np.linalg.norm(x, axis=1, keepdims=True)
    zy = y / np.linalg.norm(y, axis=1, keepdims=True)
    a = np.sum((zx - zy) ** 2, axis=1)
    assert ci.value == pytest.approx(a.mean())
    assert ci.stderr == pytest.approx(a.std(ddof=1) / math.sqrt(200), rel=1e-9)


@pytest.mark.parametrize("name", ["effective_rank", "rankme", "isoscore", "alpha_req", "stable_rank"])
def test_spectral_group_jackknife_equals_recomputation(rng, name):
    x = rng.standard_normal((300, 10)) @ rng.standard_normal((10, 10))
    full, reps, _ = _replicates(name, [x], 6, 3, {})
    groups = split_groups(300, 6, 3)
    brute = [M.REGISTRY[name](np.delete(x, g, axis=0)) for g in groups]
    np.testing.assert_allclose(reps, brute, rtol=1e-8)
    assert full == pytest.approx(M.REGISTRY[name](x), rel=1e-10)


def _coverage(sample, truth: float, trials: int) -> float:
    covered = 0
    for _ in range(trials):
        ci = M.confidence_interval("uniformity", sample())
        covered += ci.low <= truth <= ci.high
    return covered / trials


def test_uniformity_interval_covers_the_sphere_closed_form():
    # on the uniform sphere the U-statistic is degenerate (every point sees the same mean potential), so the
    # jackknife is conservative there: coverage at least nominal
    d, n = 6, 150
    gen = np.random.default_rng(2024)
    rate = _coverage(lambda: gen.standard_normal((n, d)), sphere_uniformity(d, 2.0), 200)
    assert rate >= 0.90, rate


def test_uniformity_interval_coverage_is_nominal_for_anisotropic_data():
    scales = np.array([3.0, 1.0, 1.0, 0.5, 0.5, 0.2])
    gen = np.random.default_rng(7)
    truth = float(M.uniformity(gen.standard_normal((30000, 6)) * scales + 0.5))  # se ~ 1e-3 of the CI width
    rate = _coverage(lambda: gen.standard_normal((150, 6)) * scales + 0.5, truth, 300)
    assert 0.90 <= rate <= 0.985, rate


def test_paired_difference_of_a_model_with_itself_is_zero(rng):
    x = rng.standard_normal((120, 8))
    for name in ("uniformity", "effective_rank", "isoscore"):
        diff = M.paired_difference(name, x, x.copy())
        assert diff.value == 0.0 and diff.stderr == pytest.approx(0.0, abs=1e-12)
        assert not diff.significant


def test_paired_difference_detects_a_real_difference(rng):
    x = rng.standard_normal((400, 16))
    squashed = x * np.r_[np.ones(4), np.full(12, 0.05)]  # nearly 4-dimensional
    diff = M.paired_difference("effective_rank", x, squashed)  # b - a: the squashed model has the lower rank
    assert diff.value < 0 and diff.significant
    assert diff.value == pytest.approx(diff.value_b - diff.value_a)
    assert diff.value_a == pytest.approx(M.effective_rank(x))
    assert diff.value_b == pytest.approx(M.effective_rank(squashed))
    u = M.paired_difference("uniformity", x, squashed)
    assert u.value > 0 and u.significant and u.n == 400


def test_paired_difference_alignment_needs_positives(rng):
    x = rng.standard_normal((30, 4))
    with pytest.raises(ValueError, match="y_a, y_b"):
        M.paired_difference("alignment", x, x)
    d = M.paired_difference("alignment", x, x, y_a=x + 0.1, y_b=x + 0.5)
    assert d.value > 0 and d.significant  # b's positives are further apart


def test_custom_callable_metric(rng):
    x = rng.standard_normal((100, 3))
    ci = M.confidence_interval(lambda a: float(a[:, 0].mean()), x, groups=10)
    assert ci.replicates == 10 and "recomputed" in ci.method
    assert ci.value == pytest.approx(x[:, 0].mean())
    # group jackknife of a mean is close to the textbook standard error
    assert ci.stderr == pytest.approx(x[:, 0].std(ddof=1) / 10.0, rel=0.5)


def test_cross_metric_interval_and_rejection_in_paired_difference(rng):
    x = rng.standard_normal((80, 5))
    ci = M.confidence_interval("linear_cka", x, x + 0.1 * rng.standard_normal((80, 5)))
    assert 0.9 < ci.value <= 1.0 and ci.low < ci.value < ci.high
    with pytest.raises(ValueError, match="cross-model"):
        M.paired_difference("linear_cka", x, x)


def test_batched_intervals_equal_one_at_a_time(rng):
    x = rng.standard_normal((200, 12)) @ rng.standard_normal((12, 12))
    names = ["uniformity", "effective_rank", "rankme", "isoscore", "mean_cosine", "alpha_req"]
    many = M.confidence_intervals(names, x, groups=10, seed=2)
    for nm in names:
        assert many[nm] == M.confidence_interval(nm, x, groups=10, seed=2), nm
    y = x + rng.standard_normal(x.shape)
    pd = M.paired_differences(names, x, y, groups=10, seed=2)
    for nm in names:
        one = M.paired_difference(nm, x, y, groups=10, seed=2)
        assert pd[nm].value == pytest.approx(one.value, abs=1e-12)
        assert pd[nm].stderr == pytest.approx(one.stderr, rel=1e-9, abs=1e-15)


def test_intervals_respect_each_metrics_range(rng):
    # n = 50 isotropic rows in d = 100: effective rank sits near its ceiling n - 1 = 49 and the raw t-interval
    # crosses it; the reported interval stops at 49 and says so
    x = rng.standard_normal((50, 100))
    ci = M.confidence_interval("effective_rank", x)
    assert ci.high == 49.0 and ci.value <= 49.0 and "clipped to the metric's range [1, 49]" in ci.method
    raw_high = ci.value + ci.stderr * 2.093  # t(0.975, 19)
    assert raw_high > 49.0  # the clip did something
    assert M.confidence_intervals(["effective_rank"], x)["effective_rank"].high == 49.0
    # nearly identical vectors: uniformity close to its maximum 0, never above it
    y = 1.0 + 1e-3 * rng.standard_normal((40, 8))
    u = M.confidence_interval("uniformity", y)
    assert u.high <= 0.0 and u.low >= -8.0
    # cosines in [-1, 1]
    assert -1.0 <= M.confidence_interval("mean_cosine", y).high <= 1.0
    for name in ("effective_rank", "rankme", "stable_rank", "participation_ratio", "rank_at_variance", "isoscore",
                 "spectral_entropy"):
        lo, hi = M.REGISTRY[name].bounds(50, 100, M.REGISTRY[name].kwargs)
        assert lo <= M.REGISTRY[name](x) <= hi, name


def test_the_one_jackknife_against_brute_force_and_a_closed_form(rng):
    from embedgeom.metrics.jackknife import delete_group_replicates, interval, jackknife_stderr, split_groups

    x = rng.standard_normal(57)
    # closed form: the delete-one jackknife standard error of a mean is sd / sqrt(n)
    loo = np.array([np.delete(x, i).mean() for i in range(len(x))])
    assert jackknife_stderr(loo) == pytest.approx(x.std(ddof=1) / math.sqrt(len(x)), rel=1e-12)
    # brute force: each delete-a-group replicate is the statistic recomputed without that group
    full, reps = delete_group_replicates(lambda keep: float(np.median(x[keep])), len(x), 6, seed=4)
    groups = split_groups(len(x), 6, 4)
    assert sorted(np.concatenate(groups).tolist()) == list(range(len(x)))
    assert full == np.median(x)
    assert reps.tolist() == [float(np.median(np.delete(x, g))) for g in groups]
    se = math.sqrt(5 / 6 * ((reps - reps.mean()) ** 2).sum())
    ci = interval(full, reps, len(x), 0.9, "m")
    from scipy.stats import t

    assert ci.stderr == pytest.approx(se) and ci.high == pytest.approx(full + t.ppf(0.95, 5) * se)
    clipped = interval(full, reps, len(x), 0.9, "m", bounds=(full - 1e-9, np.inf))
    assert clipped.low == full - 1e-9 and "clipped" in clipped.method
