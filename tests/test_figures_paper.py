"""Paper-ready figures and report control: legends outside the data, one-line titles, nothing clipped; layers of
models of different depth matched and labelled; cosine histograms on the range the data occupy; chance lines on
probe bars; differences in each metric's own units with the better direction; n in labels and headers and a
warning when n or d differ; truncation and subsampling in the report; report --tasks/--layers/--figures.

Inputs: the two tiny BERTs of the ``analysed`` fixture (2 layers, d = 32; lee and polarity), and a deeper, narrower
tiny BERT (4 layers, d = 16) analysed on fewer polarity texts, so depth, n and d all differ."""

from __future__ import annotations

import copy
import itertools
import json
import re
import warnings

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pytest
from typer.testing import CliRunner

import embedgeom as eg
from embedgeom import figures as F
from embedgeom import report as R
from embedgeom.cli import app
from embedgeom.results import AnalysisResult, array_key
from tests.fixtures import axes_with_data, fake_compare, make_tiny_bert, shifted, subset

runner = CliRunner()


@pytest.fixture(scope="module")
def deep(tmp_path_factory):
    """A 4-layer, d = 16 tiny BERT on 24 polarity texts, mean and max pooling, every layer, no probes."""
    path = make_tiny_bert(tmp_path_factory.mktemp("deep-bert"), layers=4, hidden=16, heads=2, seed=3)
    enc = eg.load_encoder(path, device="cpu", dtype="float32")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return eg.analyze(enc, ["sample:polarity"], name="deep", poolings=("mean", "max"), layers="all",
                          max_texts=24, probes=False, cache=False)


def _all_figures(results, cmp) -> dict[str, object]:
    runs = {"r": [shifted(results[0], 1 + k / 10, f"c{k}", trajectory={"run": "r", "step": k}) for k in (1, 2, 3)]}
    return {
        "eigenspectrum": F.eigenspectrum_figure(results, "lee"),
        "alignment-uniformity": F.alignment_uniformity_figure(results, "lee", trajectory=results),
        "no-pairs": F.alignment_uniformity_figure(results, "polarity"),
        "metric-by-pooling": F.metric_by_pooling_figure(results, "polarity", "effective_rank"),
        "probes": F.probe_figure(results),
        "layer-profile": F.layer_profile_figure(results, "lee", ["uniformity", "effective_rank"]),
        "cosines": F.cosine_histogram_figure(results, "polarity"),
        "differences": F.difference_figure(cmp, "lee"),
        "trajectory": F.trajectory_figure(runs, "lee", pooling="max"),
    }


def _overlap_px(a, b) -> float:
    w = min(a.x1, b.x1) - max(a.x0, b.x0)
    h = min(a.y1, b.y1) - max(a.y0, b.y0)
    return max(w, 0.0) * max(h, 0.0)


# --- layout: legends, titles, clipping -------------------------------------------------------------------------


def test_legends_sit_outside_every_axes_titles_are_one_line_and_nothing_is_clipped(analysed):
    results = list(analysed)
    cmp = fake_compare(subset(results[0], tasks=["lee"]), subset(results[1], tasks=["lee"]))
    for name, fig in _all_figures(results, cmp).items():
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        axes = [a for a in fig.axes if type(a).__name__ != "SecondaryAxis"]
        legends = list(fig.legends) + [a.get_legend() for a in axes if a.get_legend() is not None]
        assert legends, name
        for leg in legends:
            box = leg.get_window_extent(renderer)
            for ax in axes:  # the legend never covers any axes' data area
                assert _overlap_px(box, ax.get_window_extent(renderer)) < 1.0, (name, ax.get_title())
        for ax in axes:
            title = ax.get_title()
            assert title and "\n" not in title, (name, title)
            tb = ax.title.get_window_extent(renderer)
            assert tb.x0 >= -1 and tb.x1 <= fig.bbox.x1 + 1, (name, title)
        tight = fig.get_tightbbox(renderer)  # every drawn artist, in inches: inside the figure
        w, h = fig.get_size_inches()
        assert tight.x0 >= -0.02 and tight.y0 >= -0.02 and tight.x1 <= w + 0.02 and tight.y1 <= h + 0.02, (name, tight)
        plt.close(fig)


# --- layers of models of different depth -----------------------------------------------------------------------


def _legend_texts(fig) -> list[str]:
    legends = list(fig.legends) + [a.get_legend() for a in fig.axes if a.get_legend() is not None]
    out = []
    for leg in legends:
        out.append(leg.get_title().get_text())
        out += [t.get_text() for t in leg.get_texts()]
    return out


def test_layers_of_models_of_different_depth_are_labelled_by_how_they_are_matched(analysed, deep):
    tiny = subset(analysed[0], tasks=["polarity"], poolings=["mean", "max"])
    with pytest.warns(F.IncomparableResultsWarning):
        last = F.metric_by_pooling_figure([tiny, deep], "polarity", "effective_rank", layer=-1)
    texts = _legend_texts(last)
    assert "last layer (2 of 2; 4 of 4)" in " ".join(texts)
    assert any(t.startswith("tiny-a: layer 2 of 2") for t in texts) and any(t.startswith("deep: layer 4 of 4")
                                                                          for t in texts)
    # the bars are each model's own last layer
    ax = axes_with_data(last)[0]
    heights = sorted(round(p.get_height(), 9) for p in ax.patches)
    want = sorted(round(r.value("polarity", p, lay, "effective_rank")["value"], 9)
                  for r, lay in ((tiny, 2), (deep, 4)) for p in ("mean", "max"))
    assert heights == want
    plt.close(last)
    with pytest.warns(F.IncomparableResultsWarning):
        index = F.metric_by_pooling_figure([tiny, deep], "polarity", "effective_rank", layer=2)
    assert "layer 2 by index (2 of 2; 2 of 4)" in " ".join(_legend_texts(index))
    assert not any(re.search(r"\bL2\b", t) for t in _legend_texts(index))
    plt.close(index)
    assert F.layer_phrase([tiny, deep], "polarity", -2) == "layer -2 from each model's end (1 of 2; 3 of 4)"
    with pytest.warns(F.IncomparableResultsWarning):
        prof = F.layer_profile_figure([tiny, deep], "polarity", "effective_rank", pooling="max", layer_match="depth")
    (ax,) = axes_with_data(prof)
    assert "relative depth" in ax.get_xlabel()
    xs = sorted(tuple(np.round(ln.get_xdata(), 6)) for ln in ax.lines if len(ln.get_xdata()) > 1)
    assert xs == [(0.0, 0.25, 0.5, 0.75, 1.0), (0.0, 0.5, 1.0)]  # layer / last layer
    plt.close(prof)
    with pytest.raises(ValueError, match=r"layer_match: expected one of \('index', 'depth'\)"):
        F.layer_profile_figure([tiny], "polarity", pooling="max", layer_match="relative")


def test_report_never_files_a_last_layer_under_another_models_inner_index(analysed, deep, tmp_path):
    tiny = subset(analysed[0], tasks=["polarity"], poolings=["mean", "max"])
    with pytest.warns(F.IncomparableResultsWarning, match="differ in n"):
        R.build_report([tiny, deep], tmp_path, formats=("png",), figures="metric-by-pooling,layer-profile")
    md = (tmp_path / "index.md").read_text()
    heads = [ln.lstrip("#").strip().replace("\\", "") for ln in md.splitlines() if ln.startswith("### ")]
    assert "polarity, layer 2 of 4" in heads and "polarity, last layer (2 of 2; 4 of 4)" in heads
    assert "polarity, layer 1 by index (1 of 2; 1 of 4)" in heads
    body = md.split("### polarity, layer 2 of 4")[1].split("###")[0]
    assert "tiny-a" not in body  # tiny's layer 2 is its last layer: only under 'last layer'
    assert "relative depth" in md  # the profile of models of different depth is drawn by depth


# --- cosine histograms -------------------------------------------------------------------------------------------


def test_cosine_histogram_is_drawn_on_the_range_the_data_occupy(analysed):
    from embedgeom.measure import cosine_histogram

    rng = np.random.default_rng(0)
    res = subset(analysed[0], tasks=["polarity"], poolings=["max"], layers=[2])
    # an anisotropic set: a shared direction plus small noise; every cosine lies in [0.8, 1]
    x = np.ones((60, 32)) + 0.25 * rng.standard_normal((60, 32))
    z = x / np.linalg.norm(x, axis=1, keepdims=True)
    cos = (z @ z.T)[np.triu_indices(60, 1)]
    assert cos.min() > 0.8
    counts, stored = cosine_histogram(x, 0)  # measure stores bins between the smallest and largest sampled cosine
    assert cos.min() - 1e-12 <= stored[0] < stored[-1] <= cos.max() + 1e-12
    res.arrays[array_key("hist", "polarity", "max", 2)] = counts
    res.arrays[array_key("hist_edges", "polarity", "max", 2)] = stored
    fig = F.cosine_histogram_figure(res, "polarity")
    ax = axes_with_data(fig)[0]
    assert ax.get_xlim() == pytest.approx((stored[0], stored[-1]))
    assert ax.get_xlim()[0] > 0.8
    assert f"drawn on [{stored[0]:.2f}, {stored[-1]:.2f}]" in ax.get_xlabel()
    plt.close(fig)
    # an older result: 50 bins over [-1, 1] without saved edges, drawn on the bins its counts occupy
    del res.arrays[array_key("hist_edges", "polarity", "max", 2)]
    res.options = {**res.options, "histogram": {"bins": 50, "range": [-1, 1], "pairs": 200_000}}
    res.arrays[array_key("hist", "polarity", "max", 2)] = np.histogram(cos, bins=50, range=(-1.0, 1.0))[0]
    fig = F.cosine_histogram_figure(res, "polarity")
    ax = axes_with_data(fig)[0]
    width = 2 / 50
    lo_bin = np.floor((cos.min() + 1) / width) * width - 1  # left edge of the first occupied bin
    assert ax.get_xlim() == pytest.approx((lo_bin - width, 1.0))
    assert "50 bins over [-1, 1]" in ax.get_xlabel()
    plt.close(fig)
    # saved bin edges (a finer histogram over the occupied range) are used as they are
    edges = np.linspace(0.8, 1.0, 41)
    res.arrays[array_key("hist", "polarity", "max", 2)] = np.histogram(cos, bins=edges)[0]
    res.arrays[array_key("hist_edges", "polarity", "max", 2)] = edges
    fig = F.cosine_histogram_figure(res, "polarity")
    (patch,) = axes_with_data(fig)[0].patches
    np.testing.assert_allclose(patch.get_data().edges, edges)
    plt.close(fig)


# --- probes: chance lines --------------------------------------------------------------------------------------


def test_probe_bars_carry_a_chance_line_only_where_rows_record_chance(analysed):
    a = subset(analysed[0], tasks=["lee"], poolings=["mean", "max"], layers=[2])
    b = shifted(a, 1.0, "tiny-a2")
    for r in a.probes:
        r["chance"] = 0.125
    for r in b.probes:
        r.pop("chance", None)  # an older result: no chance recorded, no line invented
    fig = F.probe_figure([a, b], task="lee")
    ax = axes_with_data(fig)[0]
    lines = [ln for ln in ax.lines if ln.get_gid() == "chance"]
    assert len(lines) == 2  # one per pooling bar of a; none for b
    assert all(list(ln.get_ydata()) == [0.125, 0.125] and ln.get_linestyle() == "--" for ln in lines)
    bars_a = sorted(p.get_x() + p.get_width() / 2 for p in ax.patches)[::2]
    assert sorted(np.mean(ln.get_xdata()) for ln in lines) == pytest.approx(bars_a)
    assert _legend_texts(fig).count("chance") == 1
    plt.close(fig)
    for r in a.probes:
        r.pop("chance")
    fig = F.probe_figure([a], task="lee")
    assert not [ln for ln in axes_with_data(fig)[0].lines if ln.get_gid() == "chance"]
    assert "chance" not in _legend_texts(fig)
    plt.close(fig)


# --- differences ------------------------------------------------------------------------------------------------


def test_difference_panels_draw_b_minus_a_in_the_metric_units_and_name_the_better_direction(analysed):
    from embedgeom.comparison import better_side
    from embedgeom.metrics import REGISTRY

    a, b = (subset(r, poolings=["mean", "max"], layers=[2], tasks=["lee"]) for r in analysed)
    cmp = eg.compare(a, b, groups=5)
    fig = F.difference_figure(cmp, "lee")
    panels = {ax.get_title().split(" (")[0].replace(" ", "_"): ax for ax in axes_with_data(fig)}
    rows = [r for r in cmp.differences if np.isfinite(r["diff"])]
    assert set(panels) == {r["name"] for r in rows}
    for r in rows:
        ax = panels[r["name"]]
        y = [t.get_text() for t in ax.get_yticklabels()].index(r["pooling"])
        (c,) = [c for c in ax.containers if c.lines[0].get_ydata()[0] == y]
        assert c.lines[0].get_xdata()[0] == pytest.approx(r["value_b"] - r["value_a"], rel=1e-9, abs=1e-15)
        segs = c.lines[2][0].get_segments()[0]  # the whisker: the row's own interval, in the metric's units
        assert sorted(segs[:, 0]) == pytest.approx([r["low"], r["high"]], rel=1e-9, abs=1e-15)
        info = REGISTRY.get(r["name"])
        if r["kind"] == "metric" and info is not None and info.higher_is_better is not None:
            assert f"({'higher' if info.higher_is_better else 'lower'} is better)" in ax.get_title()
        side = better_side(r)
        colour = matplotlib.colors.to_hex(c.lines[0].get_color())
        if side is not None:
            assert colour == (F.OKABE_ITO[3] if side == "b" else F.OKABE_ITO[0]).lower()
    legend = " ".join(_legend_texts(fig))
    assert "b (tiny-b) better" in legend and "a (tiny-a) better" in legend and "n = 42" in legend
    plt.close(fig)
    with pytest.raises(ValueError, match="one Axes draws one metric"):
        F.difference_figure(cmp, "lee", ax=plt.subplots()[1])
    fig, ax = plt.subplots()
    F.difference_figure(cmp, "lee", metric="uniformity", ax=ax)
    assert ax.get_title() == "uniformity (lower is better)"
    plt.close(fig)


# --- n and d -------------------------------------------------------------------------------------------------------


def test_n_appears_in_figure_labels_and_table_headers(analysed, tmp_path):
    a = subset(analysed[0], tasks=["lee"], poolings=["max"], layers=[2])
    n = a.tasks["lee"]["n_items"]
    fig = F.alignment_uniformity_figure(a, "lee")
    assert any(f"tiny-a: last layer (2 of 2), n = {n}" in t or f"tiny-a: layer 2 of 2, n = {n}" in t
               for t in _legend_texts(fig))
    plt.close(fig)
    cmp = fake_compare(a, shifted(a, 1.1, "tiny-a2"))
    R.build_report([a], tmp_path, comparisons=[cmp], formats=("png",), figures="probes")
    md = (tmp_path / "index.md").read_text().replace("\\", "")
    lines = md.splitlines()
    headers = [ln for ln, nxt in itertools.pairwise(lines) if ln.startswith("| ") and nxt.startswith("|---")]
    assert headers and all(re.search(r"\| n( \(texts\))? \|", h) for h in headers), headers
    summary = next(ln for ln in md.splitlines() if ln.startswith("| tiny-a | max |"))
    assert summary.rstrip(" |").endswith(f"| {n}")


def test_mixed_n_and_d_warn_with_what_is_and_is_not_comparable(analysed, deep, tmp_path):
    tiny = subset(analysed[0], tasks=["polarity"], poolings=["mean", "max"])
    n_tiny, n_deep = tiny.tasks["polarity"]["n_items"], deep.tasks["polarity"]["n_items"]
    assert (n_tiny, n_deep) == (40, 24)
    want = (rf"polarity: results drawn together differ in n \(tiny-a: {n_tiny}, deep: {n_deep}\) and d \(tiny-a: "
            r"32, deep: 16\): ranks \(effective rank, RankMe")
    for draw in (lambda: F.eigenspectrum_figure([tiny, deep], "polarity"),
                 lambda: F.cosine_histogram_figure([tiny, deep], "polarity"),
                 lambda: F.metric_by_pooling_figure([tiny, deep], "polarity", "uniformity")):
        with pytest.warns(F.IncomparableResultsWarning, match=want) as rec:
            plt.close(draw())
        text = str(rec[0].message)
        assert "not comparable" in text and "uniformity, alignment and mean cosine" in text
    with warnings.catch_warnings():  # equal n and d: no warning
        warnings.simplefilter("error", F.IncomparableResultsWarning)
        plt.close(F.eigenspectrum_figure([tiny, shifted(tiny, 1.0, "twin")], "polarity"))
    with pytest.warns(F.IncomparableResultsWarning) as rec:
        R.build_report([tiny, deep], tmp_path, formats=("png",), figures="cosines")
    assert len([w for w in rec if w.category is F.IncomparableResultsWarning]) == 1  # once per task, not per figure
    md = (tmp_path / "index.md").read_text().replace("\\", "")
    assert f"Not comparable: polarity: results drawn together differ in n (tiny-a: {n_tiny}, deep: {n_deep})" in md


# --- truncation and subsampling in the report -------------------------------------------------------------------


def test_report_task_card_states_truncation_and_subsampling_from_the_saved_result(analysed, tmp_path):
    res = subset(analysed[0], tasks=["lee", "polarity"], poolings=["max"], layers=[2])
    saved = AnalysisResult.load(res.save(tmp_path / "saved"))
    card = json.loads((tmp_path / "saved" / "result.json").read_text())["tasks"]
    R.build_report([saved], tmp_path / "report", formats=("png",), figures="probes")
    md = (tmp_path / "report" / "index.md").read_text().replace("\\", "")
    for task in ("lee", "polarity"):
        enc, sub = card[task]["encode"], card[task]["subsample"]
        section = md.split(f"## Task {task}")[1].split("\n## ")[0]
        got = re.search(r"Truncated: tiny-a: (\d+) of (\d+) texts at max_length = (\d+) tokens", section)
        assert got and [int(g) for g in got.groups()] == [enc["truncated"], enc["n"], enc["max_length"]]
        got = re.search(r"Subsampled: ([\d,]+) of ([\d,]+) (pairs|texts) \(max_texts = (\d+), seed (\d+)\)", section)
        kept = card[task]["n_pairs"] if card[task]["n_pairs"] else card[task]["n_items"]
        assert got and [int(g.replace(",", "")) for g in got.group(1, 2)] == [kept, sub["n_before"]]
        assert got.group(3) == ("pairs" if card[task]["n_pairs"] else "texts")
        assert [int(got.group(4)), int(got.group(5))] == [sub["max_texts"], sub["seed"]]
    assert card["lee"]["encode"]["truncated"] > 0  # the sample's long documents: the number is not vacuous


# --- choosing what the report draws ---------------------------------------------------------------------------


def test_report_options_draw_exactly_the_chosen_figures_and_refuse_unknown_names(analysed, tmp_path):
    from embedgeom.cli import REPORT_FIGURE_NAMES

    a, b = (subset(r, poolings=["mean", "max"]) for r in analysed)
    a.save(tmp_path / "a")
    b.save(tmp_path / "b")
    out = tmp_path / "r"
    res = runner.invoke(app, ["report", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(out),
                                     "--no-pdf", "--tasks", "lee", "--layers", "last,0",
                                     "--figures", "eigenspectrum,cosines"])
    assert res.exit_code == 0, res.output
    assert {p.stem for p in out.glob("*.png")} == {"lee-Llast-eigenspectrum", "lee-Llast-cosines",
                                                   "lee-L0-eigenspectrum", "lee-L0-cosines"}
    md = (out / "index.md").read_text()
    assert "## Task polarity" not in md and "layer 1 of 2" not in md
    # the same options from Python
    R.build_report([a, b], tmp_path / "py", formats=("png",), tasks=["polarity"], layers=[-1],
                   figures=["metric-by-pooling"])
    assert {p.stem for p in (tmp_path / "py").glob("*.png")} == {"polarity-Llast-effective-rank"}
    for args, name in ((["--figures", "eigenspectrum,histogram"], "figures"), (["--tasks", "sst2"], "tasks"),
                       (["--layers", "7"], "layers")):
        bad = runner.invoke(app, ["report", str(tmp_path / "a"), "--out", str(tmp_path / "bad"), *args])
        assert bad.exit_code != 0 and "Traceback" not in bad.output
        line = " ".join(bad.output.split())
        assert line.startswith("error:") or f"{name}:" in line, line
        assert f"{name}: unknown" in line
    bad = runner.invoke(app, ["report", str(tmp_path / "a"), "--out", str(tmp_path / "bad"),
                                     "--figures", "histogram"])
    assert all(f in " ".join(bad.output.split()) for f in R.REPORT_FIGURES)  # the valid names, listed
    with pytest.raises(ValueError, match=r"layers: unknown 7; expected some of all, last \(= -1\), 0, 1, 2"):
        R.build_report([a], tmp_path / "x", layers=[7])
    assert tuple(R.REPORT_FIGURES) == REPORT_FIGURE_NAMES
    help_text = " ".join(runner.invoke(app, ["report", "--help"]).output.split())
    assert all(name in help_text for name in R.REPORT_FIGURES)


def test_comparison_table_shows_adjusted_p_values_when_recorded(analysed, tmp_path):
    a = subset(analysed[0], tasks=["lee"], poolings=["max"], layers=[2])
    cmp = fake_compare(a, shifted(a, 1.1, "tiny-a2"))
    plain = copy.deepcopy(cmp)
    for k, r in enumerate(cmp.differences):
        r.update(p=0.001 * (k + 1), p_adjusted=min(1.0, 0.004 * (k + 1)), correction="holm",
                 significant=0.004 * (k + 1) < 0.05)
    R.build_report([a], tmp_path / "adj", comparisons=[cmp], formats=("png",), figures="probes")
    md = (tmp_path / "adj" / "index.md").read_text().replace("\\", "")
    header = next(ln for ln in md.splitlines() if ln.startswith("| pooling | kind | name"))
    assert header.rstrip(" |").endswith("| n | p | p adjusted (holm)")
    body = [ln for ln in md.splitlines() if ln.startswith("| max | metric |")]
    for ln, r in zip(body, cmp.differences, strict=True):
        cells = [c.strip() for c in ln.strip("|").split("|")]
        assert float(cells[-1]) == pytest.approx(r["p_adjusted"], rel=1e-2)
        assert cells[6] == ("yes" if r["significant"] else "no")  # the corrected verdict
    R.build_report([a], tmp_path / "plain", comparisons=[plain], formats=("png",), figures="probes")
    md = (tmp_path / "plain" / "index.md").read_text()
    assert "p adjusted" not in md  # older comparisons: no column invented


def test_the_stored_histogram_counts_every_sampled_cosine_between_its_edges(rng):
    from embedgeom.measure import HIST_BINS, cosine_histogram

    x = rng.standard_normal((40, 8))
    counts, edges = cosine_histogram(x, 3)
    # the same seeded pairs drawn by hand: 780 = 40 * 39 / 2 draws, with replacement
    draw = np.random.default_rng(3)
    i = draw.integers(0, 40, size=780)
    j = draw.integers(0, 39, size=780)
    j = j + (j >= i)
    z = x / np.linalg.norm(x, axis=1, keepdims=True)
    cos = (z[i] * z[j]).sum(1)
    want_edges = np.linspace(cos.min(), cos.max(), HIST_BINS + 1)
    np.testing.assert_allclose(edges, want_edges, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(counts, np.histogram(cos, bins=want_edges)[0])
    one, one_edges = cosine_histogram(np.ones((5, 3)), 0)  # identical rows: one cosine value, a narrow window
    assert one.sum() == 10 and one_edges[0] < 1.0 < one_edges[-1]
