"""Figure functions: return Figures, accept ax=, draw intervals, and produce non-blank images."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.image as mpimg
import matplotlib.pyplot as plt
import numpy as np
import pytest

import embedgeom as eg
from embedgeom import figures as F


@pytest.fixture(scope="module")
def results(tiny_encoder, tmp_path_factory):
    from tests.fixtures import make_tiny_bert

    other = eg.load_encoder(make_tiny_bert(tmp_path_factory.mktemp("other"), seed=5), dtype="float32")
    kw = {"data": ["sample:lee", "sample:polarity"], "max_texts": 60, "layers": "all", "cache": False}
    return [eg.analyze(tiny_encoder, **kw), eg.analyze(other, **kw)]


def _non_blank(fig) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    buf.seek(0)
    assert mpimg.imread(buf).std() > 0.01
    plt.close(fig)


def test_every_figure_renders(results):
    cmp = eg.compare(*results)
    figs = [
        F.eigenspectrum_figure(results, "lee", "mean"),
        F.alignment_uniformity_figure(results, "lee", trajectory=results),
        F.metric_by_pooling_figure(results, "polarity", "effective_rank"),
        F.probe_figure(results),
        F.layer_profile_figure(results, "lee", "uniformity"),
        F.cosine_histogram_figure(results, "polarity"),
        F.difference_figure(cmp, "lee"),
    ]
    for fig in figs:
        assert isinstance(fig, matplotlib.figure.Figure)
        _non_blank(fig)


def test_axes_are_reused_and_intervals_drawn(results):
    fig, axes = plt.subplots(1, 2)
    out = F.alignment_uniformity_figure(results, "lee", ax=axes[0])
    assert out is fig
    assert axes[0].containers  # errorbar containers: every point carries its interval
    F.metric_by_pooling_figure(results, "lee", ax=axes[1])
    assert axes[1].containers
    _non_blank(fig)


def test_report_needs_results(tmp_path):
    with pytest.raises(ValueError, match="results"):
        F.build_report([], tmp_path)


def test_task_without_positive_pairs_shows_uniformity_per_model(results):
    fig, ax = plt.subplots()
    F.alignment_uniformity_figure(results, "polarity", ax=ax)
    # one errorbar per model x pooling, placed at that result's uniformity
    assert len(ax.containers) >= len(results)
    xs = sorted(float(c.lines[0].get_xdata()[0]) for c in ax.containers)
    want = sorted(float(r.value("polarity", p, r.checkpoint["num_layers"], "uniformity")["value"])
                  for r in results for p in ("mean", "cls", "max", "attention"))
    np.testing.assert_allclose(xs, want, rtol=1e-12)
    assert [t.get_text() for t in ax.get_yticklabels()] == [r.name for r in results]
    assert "no alignment" in ax.get_title()
    _non_blank(fig)


def test_compute_dtype_note_reports_the_dtype_used_and_a_failed_check(results):
    import copy

    r = copy.deepcopy(results[0])
    assert F.compute_dtype_note(r) == "computed in float32"
    for card in r.tasks.values():
        card["encode"]["precision_check"] = {"dtype": "bfloat16", "passed": False}
    assert F.compute_dtype_note(r) == "computed in float32 (bfloat16 failed the precision check)"


def test_metric_axes_label_each_tick_without_a_shared_offset_note(results):
    import copy

    tiny = copy.deepcopy(results)  # a near-collapsed encoder's scale: uniformities of ~1e-7, offset + 1e-3 spread
    for r in tiny:
        for row in r.metrics:
            if row["metric"] in ("uniformity", "alignment"):
                for key in ("value", "low", "high", "stderr"):
                    row[key] = row[key] * 1e-5 + (1e-3 if key != "stderr" else 0.0)
    results = tiny
    fig, axes = plt.subplots(1, 3)
    F.alignment_uniformity_figure(results, "lee", ax=axes[0])
    F.metric_by_pooling_figure(results, "lee", "uniformity", ax=axes[1])
    F.layer_profile_figure(results, "lee", "uniformity", ax=axes[2])
    fig.canvas.draw()
    for ax in axes:
        assert ax.yaxis.get_offset_text().get_text() == ""
        ticks = [(t.get_text(), t.get_position()[1]) for t in ax.get_yticklabels() if t.get_text()]
        assert ticks  # every label states its own tick's value
        for text, value in ticks:
            assert float(text.replace("−", "-")) == pytest.approx(value, rel=1e-2, abs=1e-12)
    plt.close(fig)
