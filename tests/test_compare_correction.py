"""Multiple-comparison control of a comparison's rows: p-values from the interval's own t reference, Holm and
Benjamini-Hochberg adjusted p-values (hand cases from the definitions, the step-down / step-up procedures, scipy's
BH), and what a reader sees when a correction removes a star."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from typer.testing import CliRunner

import embedgeom as eg
from embedgeom.cli import app
from embedgeom.comparison import better_side
from embedgeom.multiple_testing import CORRECTIONS, adjust_pvalues, two_sided_p

runner = CliRunner()
KW = {"data": "sample:polarity,sample:lee", "max_texts": 40, "cache": False, "dtype": "float32", "device": "cpu",
      "poolings": "mean"}


# --- adjusted p-values against the definitions -------------------------------------------------------------------

@pytest.mark.parametrize(("p", "correction", "expected"), [
    # Holm: sorted 0.005, 0.01, 0.03, 0.04 -> 4*0.005, 3*0.01, 2*0.03, 1*0.04 = 0.02, 0.03, 0.06, 0.04 -> cummax
    ([0.01, 0.04, 0.03, 0.005], "holm", [0.03, 0.06, 0.06, 0.02]),
    # BH: 4*0.005/1, 4*0.01/2, 4*0.03/3, 4*0.04/4 = 0.02, 0.02, 0.04, 0.04 -> cummin from the largest
    ([0.01, 0.04, 0.03, 0.005], "bh", [0.02, 0.04, 0.04, 0.02]),
    # ties get equal adjusted values
    ([0.02, 0.02, 0.5], "holm", [0.06, 0.06, 0.5]),
    ([0.02, 0.02, 0.5], "bh", [0.03, 0.03, 0.5]),
    # caps at 1 (Holm: 3*0.4 = 1.2 -> 1, and the step-down maximum keeps every later one at 1)
    ([0.4, 0.5, 0.9], "holm", [1.0, 1.0, 1.0]),
    ([0.4, 0.5, 0.9], "bh", [0.75, 0.75, 0.9]),
    ([1.0, 1.0], "holm", [1.0, 1.0]),
    ([1.0, 1.0], "bh", [1.0, 1.0]),
    # rows without a test are NaN and not counted: m = 2 here
    ([0.01, math.nan, 0.04], "holm", [0.02, math.nan, 0.04]),
    ([0.01, math.nan, 0.04], "bh", [0.02, math.nan, 0.04]),
    ([0.01, math.nan, 0.04], "none", [0.01, math.nan, 0.04]),
    ([0.3], "holm", [0.3]),
    ([], "bh", []),
])
def test_adjusted_p_values_hand_cases(p, correction, expected):
    np.testing.assert_allclose(adjust_pvalues(p, correction), expected, rtol=1e-12, equal_nan=True)


def _holm_rejections(p: np.ndarray, alpha: float) -> set[int]:
    """Holm's step-down procedure: walk up the sorted p-values, reject while p_(i) <= alpha / (m - i + 1)."""
    order = np.argsort(p, kind="mergesort")
    out: set[int] = set()
    for i, k in enumerate(order):
        if p[k] > alpha / (len(p) - i):
            break
        out.add(int(k))
    return out


def _bh_rejections(p: np.ndarray, alpha: float) -> set[int]:
    """BH's step-up procedure: the largest k with p_(k) <= k alpha / m; reject every p <= p_(k)."""
    ranked = np.sort(p)
    ok = np.flatnonzero(ranked <= alpha * np.arange(1, len(p) + 1) / len(p))
    return set() if not len(ok) else {int(i) for i in np.flatnonzero(p <= ranked[ok[-1]])}


@pytest.mark.parametrize("seed", range(5))
def test_adjusted_p_values_reproduce_the_procedures_and_scipy(seed):
    rng = np.random.default_rng(seed)
    m = int(rng.integers(2, 60))
    p = np.concatenate([rng.uniform(0, 0.02, m // 3), rng.uniform(0, 1, m - m // 3)])
    p[rng.integers(0, m)] = p[0]  # a tie
    holm, bh = adjust_pvalues(p, "holm"), adjust_pvalues(p, "bh")
    np.testing.assert_allclose(bh, stats.false_discovery_control(p, method="bh"), rtol=1e-12)
    for alpha in (0.001, 0.01, 0.05, 0.1, 0.25):  # adjusted p <= alpha exactly where the procedure rejects
        assert set(np.flatnonzero(holm <= alpha)) == _holm_rejections(p, alpha)
        assert set(np.flatnonzero(bh <= alpha)) == _bh_rejections(p, alpha)
    for adj in (holm, bh):  # in [p, 1], and in the order of p
        assert np.all(adj >= p - 1e-15) and np.all(adj <= 1.0)
        order = np.argsort(p, kind="mergesort")
        assert np.all(np.diff(adj[order]) >= -1e-15)
    assert np.all(holm >= bh - 1e-15)  # FWER control is the stricter
    assert np.array_equal(adjust_pvalues(p, "none"), p)


def test_adjust_pvalues_refuses_bad_input():
    with pytest.raises(ValueError, match="correction: expected one of none, holm, bh, got 'bonferroni'"):
        adjust_pvalues([0.1], "bonferroni")
    with pytest.raises(ValueError, match=r"p: expected p-values in \[0, 1\]"):
        adjust_pvalues([0.1, 1.5], "holm")
    with pytest.raises(ValueError, match="p: expected a 1-D sequence"):
        adjust_pvalues([[0.1, 0.2]], "holm")
    assert CORRECTIONS == ("none", "holm", "bh")


def test_two_sided_p_is_the_t_test():
    rng = np.random.default_rng(3)
    d = rng.normal(0.2, 1.0, 25)
    expected = stats.ttest_1samp(d, 0.0).pvalue
    assert two_sided_p(d.mean(), d.std(ddof=1) / 5.0, 24) == pytest.approx(expected, rel=1e-10)
    assert two_sided_p(0.3, 0.0, 10) == 0.0 and two_sided_p(0.0, 0.0, 10) == 1.0
    assert math.isnan(two_sided_p(math.nan, 0.1, 10)) and math.isnan(two_sided_p(0.1, math.nan, 10))


# --- on real comparisons -----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """Two tiny BERTs (same width, seeds 0 and 3) on polarity (probe accuracy) and lee (Spearman, positives), mean
    pooling, last layer, saved."""
    from tests.fixtures import make_tiny_bert

    root = tmp_path_factory.mktemp("corr")
    a = eg.analyze(make_tiny_bert(root / "a", seed=0), name="m-a", **KW)
    b = eg.analyze(make_tiny_bert(root / "b", seed=3), name="m-b", **KW)
    a.save(root / "ra")
    b.save(root / "rb")
    return root, a, b


@pytest.fixture(scope="module")
def cmps(pair):
    _, a, b = pair
    return {c: eg.compare(a, b, correction=c) for c in CORRECTIONS}


def test_rows_carry_p_from_the_interval_reference(pair, cmps):
    _, a, b = pair
    cmp = cmps["none"]
    tested = [r for r in cmp.differences if np.isfinite(r["p"])]
    assert len(tested) == cmp.options["family_size"] == len(cmp.differences)
    for r in tested:
        # the same t reference as the interval: p < 1 - confidence exactly where the interval excludes 0
        assert (r["p"] < 0.05) == (not r["low"] <= 0.0 <= r["high"]) == r["significant"]
        q = stats.t.ppf(0.975, r["df"])
        assert r["high"] - r["diff"] == pytest.approx(q * r["stderr"], rel=1e-9)
        assert r["p_adjusted"] == r["p"] and r["correction"] == "none"
    # probe accuracy: the paired t-test of per-item correctness b - a (scipy, from the saved per-item arrays)
    acc = next(r for r in cmp.differences if r["name"] == "linear:accuracy")
    key = "items|polarity|mean|2|linear|accuracy"
    d = b.arrays[key] - a.arrays[key]
    d = d[np.isfinite(d)]
    assert acc["df"] == len(d) - 1
    assert acc["p"] == pytest.approx(stats.ttest_1samp(d, 0.0).pvalue, rel=1e-9)


@pytest.mark.parametrize("correction", ["holm", "bh"])
def test_comparison_adjusts_over_all_its_rows(cmps, correction):
    base, cmp = cmps["none"], cmps[correction]
    p = np.array([r["p"] for r in cmp.differences])
    assert p == pytest.approx(np.array([r["p"] for r in base.differences]))  # the correction changes no p
    adj = np.array([r["p_adjusted"] for r in cmp.differences])
    ranked = np.sort(p)
    m = len(p)
    rank = np.arange(1, m + 1)
    if correction == "holm":  # the definitions, written out once more
        ref = np.maximum.accumulate(np.minimum(1, (m - rank + 1) * ranked))
    else:
        ref = np.minimum.accumulate(np.minimum(1, m * ranked / rank)[::-1])[::-1]
        np.testing.assert_allclose(adj, stats.false_discovery_control(p), rtol=1e-12)
    np.testing.assert_allclose(np.sort(adj), ref, rtol=1e-12)
    assert [r["significant"] for r in cmp.differences] == [bool(q < 0.05) for q in adj]
    assert all(r["correction"] == correction for r in cmp.differences)
    assert cmp.options["correction"] == correction and cmp.options["family_size"] == m
    assert cmp.options["family"] == "every difference row of this comparison with a p-value"


def test_holm_removes_a_star_and_its_better_entry(pair, cmps):
    root, _, _ = pair
    none, holm = cmps["none"], cmps["holm"]
    lost = [(r0, r1) for r0, r1 in zip(none.differences, holm.differences, strict=True)
            if r0["significant"] and not r1["significant"] and better_side(r0) is not None]
    assert lost, "the fixture should have a row significant alone but not after Holm"
    r0, r1 = lost[0]
    assert r1["p"] < 0.05 <= r1["p_adjusted"] and r1["significant_unadjusted"]
    assert better_side(r1) is None
    winner = {"a": none.a, "b": none.b}[better_side(r0)]

    def line(args):
        out = runner.invoke(app, ["compare", str(root / "ra"), str(root / "rb"), *args], env={"COLUMNS": "300"})
        assert out.exit_code == 0, out.output
        row = next(ln for ln in out.stdout.splitlines()
                   if f" {r0['name']} " in ln and f" {r0['task']} " in ln)
        return out.stdout, [c.strip() for c in row.strip("│ ").split("│")]

    text, cells = line([])
    assert cells[-2:] == ["*", winner]
    assert f"correction: none over the family = all {len(none.differences)} rows of this comparison" in text
    text, cells = line(["--correction", "holm"])
    assert cells[-2:] == ["", "–"]
    assert (f"* = Holm-adjusted p (family-wise error rate) < 0.05; correction: holm over the family = all "
            f"{len(holm.differences)} rows of this comparison") in text
    assert "p (Holm)" in text
    only = runner.invoke(app, ["compare", str(root / "ra"), str(root / "rb"), "--correction", "holm",
                               "--significant"], env={"COLUMNS": "300"})
    shown = [ln for ln in only.stdout.splitlines() if f" {r0['name']} " in ln and f" {r0['task']} " in ln]
    assert shown == []
    bh = runner.invoke(app, ["compare", str(root / "ra"), str(root / "rb"), "--correction", "bh"],
                       env={"COLUMNS": "300"})
    assert "Benjamini–Hochberg-adjusted p (false discovery rate) < 0.05" in bh.stdout and "p (BH)" in bh.stdout
    bad = runner.invoke(app, ["compare", str(root / "ra"), str(root / "rb"), "--correction", "fdr"])
    assert bad.exit_code != 0 and "fdr" in bad.output


def test_saved_comparison_states_the_correction(pair, tmp_path):
    import pandas as pd

    from embedgeom.queries import correction_of

    root, _, _ = pair
    r = runner.invoke(app, ["compare", str(root / "ra"), str(root / "rb"), "--correction", "bh", "--out",
                            str(tmp_path / "cmp"), "--format", "csv"])
    assert r.exit_code == 0, r.output
    (saved,) = [p for p in (tmp_path / "cmp").iterdir() if p.is_dir()]
    loaded = eg.ComparisonResult.load(saved)
    assert loaded.options["correction"] == "bh" and loaded.options["family_size"] == len(loaded.differences)
    assert "Student-t" in loaded.options["p_value"]
    frame = pd.read_csv(saved / "differences.csv")
    assert {"p", "p_adjusted", "df", "correction", "significant_unadjusted", "d_a", "d_b"} <= set(frame.columns)
    np.testing.assert_allclose(frame["p_adjusted"], stats.false_discovery_control(frame["p"]), rtol=1e-9)
    info = correction_of(loaded)
    assert info["correction"] == "bh" and info["family_size"] == len(loaded.differences)
    assert "Benjamini-Hochberg" in info["label"]


def test_compare_refuses_an_unknown_correction(pair):
    _, a, b = pair
    with pytest.raises(ValueError, match="correction: expected one of none, holm, bh"):
        eg.compare(a, b, correction="bonferroni")


def test_pooling_comparison_takes_a_correction(tiny_encoder):
    res = eg.analyze(tiny_encoder, ["sample:polarity"], poolings="mean,max", max_texts=40, probes=False, cache=False)
    cmp = eg.compare(res, poolings=("mean", "max"), correction="holm")
    p = np.array([r["p"] for r in cmp.differences])
    finite = np.isfinite(p)
    assert cmp.options["family_size"] == int(finite.sum())
    adj = np.array([r["p_adjusted"] for r in cmp.differences])
    np.testing.assert_allclose(adj[finite], adjust_pvalues(p[finite], "holm"), rtol=1e-12)
