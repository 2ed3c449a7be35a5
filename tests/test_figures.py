"""Figure functions: return Figures, accept ax=, draw intervals labelled with the confidence the results used,
draw whatever pooling and layer the results hold (never a default of mean pooling), and produce non-blank images.
figures.py only draws: the questions it asks of results live in embedgeom.queries."""

from __future__ import annotations

import ast
import copy
import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.image as mpimg
import matplotlib.pyplot as plt
import numpy as np
import pytest

from embedgeom import figures as F
from embedgeom import report as R
from tests.fixtures import axes_with_data, fake_compare, shifted, subset


@pytest.fixture
def results(analysed):
    return list(analysed)


def _non_blank(fig) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    buf.seek(0)
    assert mpimg.imread(buf).std() > 0.01
    plt.close(fig)


def test_every_figure_renders(results):
    cmp = fake_compare(*(subset(r, tasks=["lee"]) for r in results))
    runs = {"r": [shifted(results[0], 1 + k / 10, f"c{k}", trajectory={"run": "r", "step": k}) for k in (1, 2, 3)]}
    figs = [
        F.eigenspectrum_figure(results, "lee", "mean"),
        F.alignment_uniformity_figure(results, "lee", trajectory=results),
        F.metric_by_pooling_figure(results, "polarity", "effective_rank"),
        F.probe_figure(results),
        F.layer_profile_figure(results, "lee", "uniformity"),
        F.cosine_histogram_figure(results, "polarity"),
        F.difference_figure(cmp, "lee"),
        F.trajectory_figure(runs, "lee", pooling="max"),
    ]
    for fig in figs:
        assert isinstance(fig, matplotlib.figure.Figure)
        axes_with_data(fig)
        assert F.has_data(fig)
        _non_blank(fig)


def test_axes_are_reused_and_intervals_drawn(results):
    fig, axes = plt.subplots(1, 2)
    out = F.alignment_uniformity_figure(results, "lee", ax=axes[0])
    assert out is fig
    assert axes[0].containers  # errorbar containers: every point carries its interval
    F.metric_by_pooling_figure(results, "lee", ax=axes[1])
    assert axes[1].containers
    _non_blank(fig)


@pytest.mark.parametrize("pooling", ["max", "cls", "attention"])
def test_a_result_holding_one_pooling_is_drawn_without_naming_it(results, pooling):
    only = [subset(r, poolings=[pooling]) for r in results]
    figs = [F.eigenspectrum_figure(only, "lee"), F.cosine_histogram_figure(only, "lee"),
            F.alignment_uniformity_figure(only, "lee"), F.probe_figure(only),
            F.metric_by_pooling_figure(only, "lee"), F.layer_profile_figure(only, "lee")]
    for fig in figs:
        for ax in axes_with_data(fig):
            assert "mean pooling" not in ax.get_title() and "(mean" not in ax.get_title()
        assert any(f"{pooling} pooling" in t or pooling in t.split() for t in _texts(fig))  # title, legend, tick
        assert not any("mean pooling" in t for t in _texts(fig))
        plt.close(fig)


def test_layer_none_is_the_last_measured_and_negative_counts_from_the_model_end(results):
    early = [subset(r, layers=[0, 1]) for r in results]  # a result that never reached the last layer
    fig = F.cosine_histogram_figure(early, "lee", "max")
    assert any("layer 1 of 2" in t for t in _texts(fig))  # the legend says which layer of how many
    plt.close(fig)
    with pytest.raises(ValueError, match=r"layer: expected one of \[0, 1\]"):
        F.cosine_histogram_figure(early, "lee", "max", layer=-1)  # layer 2 was not measured
    fig = F.eigenspectrum_figure(results, "lee", "max", -3)
    assert any("layer 0 of 2" in t for t in _texts(fig))
    plt.close(fig)


def test_report_needs_results(tmp_path):
    with pytest.raises(ValueError, match="results"):
        R.build_report([], tmp_path)


def test_task_without_positive_pairs_shows_uniformity_per_model(results):
    fig, ax = plt.subplots()
    F.alignment_uniformity_figure(results, "polarity", ax=ax)
    # one errorbar per model x pooling, placed at that result's uniformity (at the last layer measured)
    assert len(ax.containers) >= len(results)
    xs = sorted(float(c.lines[0].get_xdata()[0]) for c in ax.containers)
    want = sorted(float(r.value("polarity", p, r.checkpoint["num_layers"], "uniformity")["value"])
                  for r in results for p in ("mean", "cls", "max", "attention"))
    np.testing.assert_allclose(xs, want, rtol=1e-12)
    assert [t.get_text() for t in ax.get_yticklabels()] == [r.name for r in results]
    assert "no alignment" in ax.get_title()
    _non_blank(fig)


def test_compute_dtype_note_reports_the_dtype_used_and_a_failed_check(results):
    r = copy.deepcopy(results[0])
    assert R.compute_dtype_note(r) == "computed in float32"
    for card in r.tasks.values():
        card["encode"]["precision_check"] = {"dtype": "bfloat16", "passed": False}
    assert R.compute_dtype_note(r) == "computed in float32 (bfloat16 failed the precision check)"


def test_metric_axes_label_each_tick_without_a_shared_offset_note(results):
    tiny = copy.deepcopy(results)  # a near-collapsed encoder's scale: uniformities of ~1e-7, offset + 1e-3 spread
    for r in tiny:
        for row in r.metrics:
            if row["metric"] in ("uniformity", "alignment"):
                for key in ("value", "low", "high", "stderr"):
                    row[key] = row[key] * 1e-5 + (1e-3 if key != "stderr" else 0.0)
    results = tiny
    fig, axes = plt.subplots(1, 3)
    F.alignment_uniformity_figure(results, "lee", pooling=["mean", "max"], ax=axes[0])
    F.metric_by_pooling_figure(results, "lee", "uniformity", ax=axes[1])
    F.layer_profile_figure(results, "lee", "uniformity", pooling="max", ax=axes[2])
    fig.canvas.draw()
    for ax in axes:
        assert ax.yaxis.get_offset_text().get_text() == ""
        ticks = [(t.get_text(), t.get_position()[1]) for t in ax.get_yticklabels() if t.get_text()]
        assert ticks  # every label states its own tick's value
        for text, value in ticks:
            assert float(text.replace("−", "-")) == pytest.approx(value, rel=1e-2, abs=1e-12)
    plt.close(fig)


def test_a_figure_without_data_raises_nothing_to_draw(results):
    bare = subset(results[0])
    bare.arrays = {k: v for k, v in bare.arrays.items() if not k.startswith(("hist|", "spectrum|"))}
    with pytest.raises(F.NothingToDraw, match="no cosine histograms"):
        F.cosine_histogram_figure([bare], "lee")
    with pytest.raises(F.NothingToDraw, match="no eigenspectra"):
        F.eigenspectrum_figure([bare], "lee")
    bare.probes = []
    with pytest.raises(F.NothingToDraw, match="no probe scores"):
        F.probe_figure([bare])


def test_layer_profile_ticks_are_the_layers_with_values(results):
    # CLS at layer 0 is one vector for every text: its spectral metrics are undefined there, so not drawn
    fig = F.layer_profile_figure(results, "lee", "effective_rank", pooling="cls")
    (ax,) = axes_with_data(fig)
    drawn = sorted({int(x) for ln in ax.lines for x in ln.get_xdata()})
    want = sorted({int(r["layer"]) for r in results[0].metrics if (r["task"], r["pooling"], r["metric"]) ==
                   ("lee", "cls", "effective_rank") and np.isfinite(r["value"])})
    assert drawn == want and list(ax.get_xticks()) == want
    assert [t.get_text() for t in ax.get_xticklabels()] == [str(x) for x in want]
    plt.close(fig)


# --- labels say the confidence used -------------------------------------------------------------------------------


def _texts(fig) -> list[str]:
    """Every text of ``fig``: titles, axis and tick labels, legends."""
    return [t.get_text().replace("\n", " ") for t in fig.findobj(matplotlib.text.Text)]


def test_figures_label_intervals_with_the_confidence_the_analysis_used(analysed_90):
    res, cmp = analysed_90
    ckpts = [shifted(res, 1 + k / 10, f"c{k}", trajectory={"run": "r", "step": k}) for k in (1, 2, 3)]
    labelled = {"alignment-uniformity": F.alignment_uniformity_figure(res, "lee"),
                "metric-by-pooling": F.metric_by_pooling_figure(res, "lee", "uniformity"),
                "differences": F.difference_figure(cmp, "lee")}
    others = {"eigenspectrum": F.eigenspectrum_figure(res, "lee"), "layer-profile": F.layer_profile_figure(res, "lee"),
              "cosines": F.cosine_histogram_figure(res, "lee"), "trajectory": F.trajectory_figure(ckpts, "lee")}
    for name, fig in {**labelled, **others}.items():
        texts = _texts(fig)
        assert not [t for t in texts if "95%" in t], name
        if name in labelled:
            assert any("90% CI" in t for t in texts), name
        plt.close(fig)


def test_figures_name_each_confidence_when_results_differ(results, analysed_90):
    mixed = [analysed_90[0], subset(results[0], poolings=["mean", "max"], tasks=["lee"])]
    for fig in (F.alignment_uniformity_figure(mixed, "lee"), F.metric_by_pooling_figure(mixed, "lee")):
        assert any("CIs: 90% for tiny-90, 95% for tiny-a" in t for t in _texts(fig))
        plt.close(fig)


# --- figures only draw --------------------------------------------------------------------------------------------

_PACKAGE = Path(F.__file__).parent


def test_figures_has_no_module_getattr_and_holds_no_result_queries():
    tree = ast.parse((_PACKAGE / "figures.py").read_text(encoding="utf-8"))
    defined = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    assert "__getattr__" not in defined and not hasattr(F, "build_report")
    queries = {"as_results", "tasks_of", "poolings_of", "layers_of", "metrics_of", "num_layers", "resolve_layer",
               "check_task", "select_poolings", "check_layer", "trajectory_of", "group_runs", "comparison_poolings",
               "comparison_model", "comparison_label", "has_intervals", "pooling_key", "layer_key", "layer_key_text",
               "confidence_of", "main_probe", "_row", "_finite", "_cmp_tasks"}
    assert defined.isdisjoint(queries), defined & queries


def test_report_uses_only_public_names_of_figures_and_queries():
    tree = ast.parse((_PACKAGE / "report.py").read_text(encoding="utf-8"))
    aliases = {a.asname or a.name for n in tree.body if isinstance(n, ast.ImportFrom) and n.level == 1
               and n.module is None for a in n.names}
    assert {"F", "Q"} <= aliases
    private = sorted({f"{n.value.id}.{n.attr}" for n in ast.walk(tree) if isinstance(n, ast.Attribute)
                      and isinstance(n.value, ast.Name) and n.value.id in aliases and n.attr.startswith("_")})
    assert private == []
    imported = [a.name for n in tree.body if isinstance(n, ast.ImportFrom) and n.level == 1 and n.module
                for a in n.names if a.name.startswith("_")]
    assert imported == []


def test_differences_of_two_poolings_take_a_pooling_name_or_an_ascii_label(analysed_90):
    import embedgeom as eg
    from tests.fixtures import axes_with_data

    _, cmp = analysed_90
    task = next(iter({r["task"] for r in cmp.differences}))
    label = next(r for r in cmp.differences if r.get("pooling_b"))
    exact = f"{label['pooling_b']} − {label['pooling']}"
    figs = [eg.plot.differences(cmp, task, pooling=p) for p in
            (exact, label["pooling_b"], label["pooling"], exact.replace(" − ", " - "))]
    drawn = [[np.asarray(line.get_xydata()).tolist() for ax in f.axes for line in ax.lines] for f in figs]
    assert all(axes_with_data(f) for f in figs)
    assert drawn[1] == drawn[0] and drawn[2] == drawn[0] and drawn[3] == drawn[0]  # the same panel each way
    with pytest.raises(ValueError, match="pooling: expected one or more of"):
        eg.plot.differences(cmp, task, pooling="cls")
