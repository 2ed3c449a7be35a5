"""The report: every figure it writes has data drawn in it, every number it states matches the results or the
comparison's rows, the HTML is rendered Markdown with a working table of contents, PDFs embed TrueType fonts.

Inputs: two real analyses of tiny BERTs (every pooling, layers 0-2; the ``analysed`` fixture), cut down to what a
narrower analysis would hold (one pooling, one layer), and comparisons / trajectories / reference-protocol
companions built from them (tests/fixtures.py); a tiny BERT analysed at confidence 0.9 (``analysed_90``)."""

from __future__ import annotations

import math
import re
from html.parser import HTMLParser
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import numpy as np
import pytest

import embedgeom as eg
from embedgeom import report as R
from embedgeom.results import AnalysisResult, ComparisonResult
from tests.fixtures import axes_with_data, fake_compare, paper_companion, shifted, subset

# --- what a report wrote ------------------------------------------------------------------------------------


@pytest.fixture
def drawn(monkeypatch):
    """Every figure build_report saves, by file stem, captured before it is closed."""
    figs: dict[str, object] = {}
    original = R.save_figure

    def spy(fig, out, stem, formats=("png", "pdf")):
        figs[stem] = fig
        return original(fig, out, stem, formats)

    monkeypatch.setattr(R, "save_figure", spy)
    return figs


def check_written(out: Path, drawn: dict) -> None:
    pngs = {p.stem for p in out.glob("*.png")}
    assert pngs == set(drawn), pngs ^ set(drawn)
    index = (out / "index.md").read_text()
    for stem, fig in drawn.items():
        axes_with_data(fig)
        assert f"]({stem}.png)" in index


def titles(drawn: dict) -> list[str]:
    return [a.get_title().replace("\n", " ") for fig in drawn.values() for a in fig.axes]


def texts(fig) -> list[str]:
    """Every text of ``fig`` (titles, labels, ticks, legend entries and titles), line breaks as spaces."""
    import matplotlib.text

    return [t.get_text().replace("\n", " ") for t in fig.findobj(matplotlib.text.Text)]


def sections(md: str) -> dict[str, str]:
    """Heading text -> the Markdown below it (up to the next heading)."""
    out, head, buf = {}, None, []
    for line in md.splitlines():
        m = re.match(r"^(#+) (.*)$", line)
        if m:
            if head is not None:
                out[head] = "\n".join(buf)
            head, buf = unescape(m.group(2)), []
        else:
            buf.append(line)
    out[head] = "\n".join(buf)
    return out


def unescape(s: str) -> str:
    return re.sub(r"\\(.)", r"\1", s)


def tables(md: str) -> list[list[dict[str, str]]]:
    """Every Markdown table in ``md`` as a list of {header: cell} rows (escapes removed)."""
    out, lines = [], md.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].startswith("| ") and i + 1 < len(lines) and lines[i + 1].startswith("|---"):
            header = [unescape(c.strip()) for c in re.split(r"(?<!\\)\|", lines[i])[1:-1]]
            rows, i = [], i + 2
            while i < len(lines) and lines[i].startswith("|"):
                cells = [unescape(c.strip()) for c in re.split(r"(?<!\\)\|", lines[i])[1:-1]]
                rows.append(dict(zip(header, cells, strict=True)))
                i += 1
            out.append(rows)
        else:
            i += 1
    return out


def cell(row: dict) -> str:
    """What the report must print for a metric row: value [low, high] (4 significant digits)."""
    v = f"{row['value']:.4g}"
    if math.isfinite(row.get("low", math.nan)) and math.isfinite(row.get("high", math.nan)):
        return f"{v} [{row['low']:.4g}, {row['high']:.4g}]"
    return v


def check_summary_tables(md: str, results: list[AnalysisResult]) -> int:
    """Every row of every per-task table matches the results' own rows; returns how many cells were checked."""
    by_name = {r.name: r for r in results}
    checked = 0
    for head, body in sections(md).items():
        m = re.match(r"^(\S+), (?:layer (\d+)|last layer)", head or "")  # 'layer 1 of 2', 'last layer (2 of 2)'
        if not m or ":" in head:
            continue
        task = m.group(1)
        for table in tables(body):
            for row in table:
                res = by_name[row["model"]]
                for metric, text in row.items():
                    if metric in ("model", "pooling", "layer", "n (texts)") or text == "–":
                        continue
                    lay, of, last = row["layer"].split()  # '2 of 6': the layer and the model's last layer
                    assert of == "of" and int(last) == res.checkpoint["num_layers"]
                    want = res.value(task, row["pooling"], int(lay), metric)
                    assert text == cell(want), (task, row["model"], row["pooling"], metric)
                    checked += 1
    return checked


def build(results, out, drawn, **kw) -> str:
    R.build_report(results, out, formats=kw.pop("formats", ("png",)), **kw)
    check_written(out, drawn)
    return (out / "index.md").read_text()


# --- one pooling alone, one layer ----------------------------------------------------------------------------


@pytest.mark.parametrize("pooling", ["max", "cls", "attention"])
def test_a_single_pooling_report_draws_that_pooling(analysed, tmp_path, drawn, pooling):
    res = subset(analysed[0], poolings=[pooling], layers=[2], tasks=["lee"])
    md = build([res], tmp_path, drawn)
    # every per-layer figure is written, with data, and says which pooling and layer it shows
    for what in ("eigenspectrum", "alignment-uniformity", "effective-rank", "cosines", "probes"):
        assert f"lee-Llast-{what}" in drawn, sorted(drawn)
    assert all("mean pooling" not in t and "(mean" not in t and "no probe" not in t for t in titles(drawn))
    assert any(f"{pooling} pooling" in t for t in titles(drawn))
    for stem in ("eigenspectrum", "alignment-uniformity", "effective-rank", "cosines", "probes"):
        assert any("last layer (2 of 2)" in t for t in texts(drawn[f"lee-Llast-{stem}"])), stem
        assert any("n = 42" in t for t in texts(drawn[f"lee-Llast-{stem}"])), stem
    lee_probes = drawn["lee-Llast-probes"].axes[0]
    assert pooling in " ".join(t.get_text() for t in lee_probes.get_xticklabels())
    assert check_summary_tables(md, [res]) >= 6
    # the probe table states the results' own scores
    body = sections(md)["lee, last layer (2 of 2): probes"]
    rows = tables(body)[0]
    assert {(r["probe"], r["metric"]) for r in rows} == {(p["probe"], p["metric"]) for p in res.probes
                                                         if p["task"] == "lee"}
    for r in rows:
        p = next(p for p in res.probes if (p["task"], p["probe"], p["metric"]) == ("lee", r["probe"], r["metric"]))
        assert r["value (± 1.96 s.e. where the probe has one)"].split(" ±")[0] == f"{p['value']:.4g}"


# --- every layer ---------------------------------------------------------------------------------------------


def test_layer_all_report_profiles_every_layer(analysed, tmp_path, drawn):
    a, b = (subset(r, poolings=["max"], tasks=["lee"]) for r in analysed)
    md = build([a, b], tmp_path, drawn)
    secs = sections(md)
    for head in ("lee, layer 0 of 2", "lee, layer 1 of 2", "lee, last layer (2 of 2)"):
        assert head in secs
    for key in ("L0", "L1", "Llast"):
        assert f"lee-{key}-eigenspectrum" in drawn
    for pooling in ("max",):
        fig = drawn[f"lee-layer-profile-{pooling}"]
        axes = axes_with_data(fig)
        metrics = {a.get_ylabel() for a in axes}
        assert {"effective rank", "uniformity", "alignment", "rankme", "isoscore", "mean cosine"} <= metrics
        for ax in axes:
            assert list(ax.get_xticks()) == [0, 1, 2]  # ticks are the integer layers
            assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "1", "2"]
            lines = [ln for ln in ax.lines if len(ln.get_xdata()) == 3]
            assert [list(ln.get_xdata()) for ln in lines] == [[0, 1, 2]] * 2  # one per model, every layer
            assert ax.collections  # interval bands
        ax = next(x for x in axes if x.get_ylabel() == "effective rank")
        want = [r for r in a.metrics if (r["task"], r["pooling"], r["metric"]) == ("lee", pooling, "effective_rank")
                and math.isfinite(r["value"])]
        np.testing.assert_allclose(ax.lines[0].get_xdata(), [r["layer"] for r in want])
        np.testing.assert_allclose(ax.lines[0].get_ydata(), [r["value"] for r in want])
    assert check_summary_tables(md, [a, b]) >= 3 * 2 * 6
    # two models: a best-first ranking per metric, in the registry's direction
    body = secs["lee, layer 1 of 2"]
    line = next(ln for ln in body.splitlines() if ln.startswith("- effective\\_rank (higher is better)"))
    ranks = {p: a.value("lee", p, 1, "effective_rank")["value"] > b.value("lee", p, 1, "effective_rank")["value"]
             for p in ("max",)}
    for p, a_first in ranks.items():
        seg = unescape(line.split(f"{p}: ", 1)[1].split(";")[0])
        assert seg.startswith("tiny-a" if a_first else "tiny-b")


# --- comparisons -----------------------------------------------------------------------------------------------


def diff_panels(fig) -> dict:
    """A difference figure's panels by the row name they draw (titles read 'effective rank (higher is better)')."""
    out = {}
    for ax in axes_with_data(fig):
        m = re.match(r"^(.*) \((?:higher is better|lower is better|no better direction)\)$", ax.get_title())
        assert m, ax.get_title()
        out[m.group(1).replace(" ", "_")] = ax
    return out


def _significant_lines(md: str) -> list[str]:
    return [unescape(ln) for ln in md.splitlines() if ln.startswith("- Significant")]


def outside_zero(row: dict) -> bool:
    """Whether a difference row's interval [low, high] lies wholly on one side of 0 (decided here, from the
    numbers, not by the report's own predicate)."""
    lo, hi = row["low"], row["high"]
    return math.isfinite(lo) and math.isfinite(hi) and (lo > 0 or hi < 0)


def test_pooling_comparison_report_lists_every_significant_row(analysed, tmp_path, drawn):
    model = subset(analysed[0], poolings=["mean", "max"], layers=[2], tasks=["lee"])
    cmp = eg.compare(model, poolings=("mean", "max"), groups=5)
    sig = [r for r in cmp.differences if outside_zero(r)]
    assert 0 < len(sig) < len(cmp.differences)
    md = build([model], tmp_path, drawn, comparisons=[cmp])
    assert "## Comparison: max − mean (tiny-a)" in md
    lines = _significant_lines(md)
    assert len(lines) == 1 and "max − mean pooling, layer 2" in lines[0]
    assert f": {len(sig)} of {len(cmp.differences)}: " in lines[0]
    listed = re.findall(r"([\w:]+) ([+-][\d.e+-]+) \[([+-][\d.e+-]+), ([+-][\d.e+-]+)\]", lines[0])
    assert [(n, float(d), float(lo), float(hi)) for n, d, lo, hi in listed] == [
        (r["name"], float(f"{r['diff']:+.4g}"), float(f"{r['low']:+.4g}"), float(f"{r['high']:+.4g}")) for r in sig]
    table = next(t for t in tables(md) if t and "significant" in t[0])
    assert len(table) == len(cmp.differences)
    for row, r in zip(table, cmp.differences, strict=True):
        assert row["name"] == r["name"] and row["mean (first)"] == f"{r['value_a']:.4g}"
        assert row["max (second)"] == f"{r['value_b']:.4g}"
        assert row["diff (second − first) [95% CI]"] == f"{r['diff']:+.4g} [{r['low']:+.4g}, {r['high']:+.4g}]"
        assert row["significant"] == ("yes" if outside_zero(r) else "no")
    fig = drawn["differences-tiny-a-max-vs-mean-lee-L2"]
    assert any("max − mean" in t and "layer 2" in t for t in texts(fig))
    panels = diff_panels(fig)
    finite = [r for r in cmp.differences if math.isfinite(r["diff"])]
    assert set(panels) == {r["name"] for r in finite}  # a panel per metric and probe
    for r in finite:
        ax = panels[r["name"]]
        assert "second − first" in ax.get_xlabel()
        (c,) = ax.containers  # one pooling pair: one row, with its interval, in the metric's units
        assert c.lines[0].get_xdata()[0] == pytest.approx(r["diff"], rel=1e-12)
        assert (c.lines[0].get_markerfacecolor() != "white") == bool(r["significant"])


def test_a_reference_protocol_comparison_reports_point_differences(analysed, tmp_path, drawn):
    a = subset(analysed[0], poolings=["max"], layers=[2], tasks=["lee"])
    cmp = fake_compare(a, shifted(a, 1.1, "tiny-a2"), options={"protocol": "paper"})
    for r in cmp.differences:
        r.update(stderr=math.nan, low=math.nan, high=math.nan, significant=False)
    md = build([a], tmp_path, drawn, comparisons=[cmp])
    (line,) = _significant_lines(md)
    assert "not assessed" in line and f"{len(cmp.differences)} point differences" in line
    table = next(t for t in tables(md) if t and "significant" in t[0])
    assert [row["diff (b − a)"] for row in table] == [f"{r['diff']:+.4g}" for r in cmp.differences]
    fig = drawn["differences-tiny-a-vs-tiny-a2-lee-L2"]
    assert any("no intervals" in t for t in texts(fig))
    for r in cmp.differences:  # point values b − a in the metric's units, no interval drawn
        ax = diff_panels(fig)[r["name"]]
        assert not ax.containers
        assert [ln.get_xdata()[0] for ln in ax.lines if ln.get_marker() == "D"] == pytest.approx([r["diff"]])


def test_real_comparison_at_max_pooling_reports_its_rows(analysed, tmp_path, drawn):
    a, b = (subset(r, poolings=["max"], layers=[2], tasks=["lee"]) for r in analysed)
    cmp = eg.compare(a, b, groups=5)
    md = build([a, b], tmp_path, drawn, comparisons=[cmp])
    lines = _significant_lines(md)
    assert len(lines) == 1 and "max pooling, layer 2" in lines[0] and "mean" not in lines[0].split(":")[0]
    n_sig = sum(outside_zero(r) for r in cmp.differences)
    assert f"{n_sig} of {len(cmp.differences)}" in lines[0]
    for r in cmp.differences:
        if outside_zero(r):
            assert f"{r['name']} {r['diff']:+.4g} [{r['low']:+.4g}, {r['high']:+.4g}]" in lines[0]
    assert "## Comparison: tiny-b − tiny-a" in md and "diff = b − a (second minus first)" in md
    fig = next(f for s, f in drawn.items() if "differences" in s)
    for ax in axes_with_data(fig):
        assert "b − a" in ax.get_xlabel() and [t.get_text() for t in ax.get_yticklabels()] == ["max"]


def test_a_seed_group_comparison_reports_how_many_seeds_agree(analysed, tmp_path, drawn):
    a, b = (subset(r, poolings=["max"], layers=[2], tasks=["lee"]) for r in analysed)
    group = [(a, b), (shifted(a, 1.02, "tiny-a2"), shifted(b, 0.97, "tiny-b2")),
             (shifted(a, 0.99, "tiny-a3"), shifted(b, 1.01, "tiny-b3"))]
    per_seed = [fake_compare(x, y).differences for x, y in group]
    rows = []
    for seed_rows in zip(*per_seed, strict=True):
        d = np.array([r["diff"] for r in seed_rows])
        agree = int((np.sign(d) == np.sign(d.mean())).sum())
        half = 4.3 * d.std(ddof=1) / np.sqrt(3)
        rows.append({**seed_rows[0], "diff": float(d.mean()), "low": float(d.mean() - half),
                     "high": float(d.mean() + half), "seeds": 3, "seeds_agree": agree,
                     "seeds_significant": sum(r["significant"] for r in seed_rows), "per_seed": d.tolist()})
    opts = {"kind": "groups", "seeds": 3, "members": {"a": ["tiny-a", "tiny-a2", "tiny-a3"],
                                                      "b": ["tiny-b", "tiny-b2", "tiny-b3"]}}
    cmp = ComparisonResult("tiny-a (x3)", "tiny-b (x3)", rows, [], {"confidence": 0.95, **opts})
    md = build([a, b], tmp_path, drawn, comparisons=[cmp])
    assert "Seed groups of 3 runs" in md and "a: tiny-a, tiny-a2, tiny-a3" in md and "between-seed" in md
    table = next(t for t in tables(md) if t and "seeds" in t[0])
    assert [row["seeds"] for row in table] == [f"{r['seeds_agree']} of 3 ({r['seeds_significant']})" for r in rows]
    assert [row["name"] for row in table] == [r["name"] for r in rows]


# --- three models, trajectories ---------------------------------------------------------------------------------


def test_three_models_get_one_table_and_a_ranking_per_metric(analysed, tmp_path, drawn):
    a, b = (subset(r, poolings=["mean", "max"], layers=[2], tasks=["lee"]) for r in analysed)
    c = shifted(a, 1.05, "tiny-c")
    cmps = [fake_compare(a, b), fake_compare(a, c)]
    md = build([a, b, c], tmp_path, drawn, comparisons=cmps)
    secs = sections(md)
    (table,) = tables(secs["lee, last layer (2 of 2)"])
    assert [(r["model"], r["pooling"]) for r in table] == [(m, p) for m in ("tiny-a", "tiny-b", "tiny-c")
                                                           for p in ("mean", "max")]
    assert {"uniformity", "alignment", "effective_rank", "rankme", "isoscore", "mean_cosine"} <= set(table[0])
    check_summary_tables(md, [a, b, c])
    from embedgeom.metrics import REGISTRY

    ranking = [unescape(ln) for ln in secs["lee, last layer (2 of 2)"].splitlines() if ln.startswith("- ")]
    for metric in ("uniformity", "effective_rank", "isoscore", "alignment"):
        line = next(ln for ln in ranking if ln.startswith(f"- {metric} ("))
        higher = REGISTRY[metric].higher_is_better
        assert ("higher is better" if higher else "lower is better") in line
        for p in ("mean", "max"):
            seg = line.split(f"{p}: ", 1)[1].split(";")[0]
            names = re.findall(r"(tiny-\w) \(", seg)
            vals = {r.name: r.value("lee", p, 2, metric)["value"] for r in (a, b, c)}
            assert names == sorted(vals, key=lambda n: -vals[n] if higher else vals[n])
            assert [float(v) for v in re.findall(r"\(([-\d.e+]+)\)", seg)] == [float(f"{vals[n]:.4g}") for n in names]
    assert any("not ranked" in ln and "alpha_req" in ln for ln in ranking)
    assert md.count("## Comparison: ") == 2
    assert len([s for s in drawn if "differences" in s]) == 2
    for fig in (f for s, f in drawn.items() if "differences" in s):
        for ax in axes_with_data(fig):  # a panel per metric, a row per pooling
            assert [t.get_text() for t in ax.get_yticklabels()] == ["mean", "max"]


def test_three_checkpoint_trajectories_are_drawn_against_step(analysed, tmp_path, drawn):
    a, b = (subset(r, poolings=["mean"], layers=[2], tasks=["lee"]) for r in analysed)
    ckpts = []
    for run, base, obj in (("mlm", a, "mlm"), ("hybrid", b, "hybrid")):
        for k, step in enumerate((300, 100, 200)):  # out of order: sorted by step
            ckpts.append(shifted(base, 1 + 0.1 * step / 100, f"{run}-{step}", trajectory={
                "run": run, "step": step, "tokens": step * 4096, "objective": obj}))
            del k
    md = build(ckpts, tmp_path, drawn)
    assert "## Training trajectories" in md
    stem = next(s for s in drawn if s.startswith("trajectory-lee"))
    axes = axes_with_data(drawn[stem])
    assert {ax.get_ylabel() for ax in axes} >= {"uniformity", "effective rank", "rankme", "isoscore", "alignment"}
    for ax in axes:
        runs = [ln for ln in ax.lines if len(ln.get_xdata()) == 3]
        assert len(runs) == 2 and all(list(ln.get_xdata()) == [100, 200, 300] for ln in runs)
        assert len(ax.collections) >= 2  # bands
        assert "mean pooling" in ax.get_title()
    assert any("last layer (2 of 2)" in t for t in texts(drawn[stem]))
    assert any(type(c).__name__ == "SecondaryAxis" for c in axes[0].child_axes)  # tokens seen
    ax = next(x for x in axes if x.get_ylabel() == "uniformity")
    mlm = sorted((c for c in ckpts if c.checkpoint["trajectory"]["run"] == "mlm"),
                 key=lambda c: c.checkpoint["trajectory"]["step"])
    np.testing.assert_allclose(ax.lines[0].get_ydata(), [c.value("lee", "mean", 2, "uniformity")["value"]
                                                         for c in mlm])
    body = sections(md)["lee: trajectory, mean pooling, last layer (2 of 2)"]
    (table,) = tables(body)
    assert [(r["run"], r["step"]) for r in table] == [("mlm", "100"), ("mlm", "200"), ("mlm", "300"),
                                                      ("hybrid", "100"), ("hybrid", "200"), ("hybrid", "300")]
    for r in table:
        c = next(c for c in ckpts if c.name == f"{r['run']}-{r['step']}")
        assert r["tokens"] == f"{int(r['step']) * 4096:,}"
        assert r["effective_rank"] == cell(c.value("lee", "mean", 2, "effective_rank"))
    # each run's last checkpoint is a model of the per-task sections
    assert "mlm (step 300)" in md and "hybrid (step 300)" in md
    # the trajectory section states the checkpoints' truncation, from their task cards
    enc = a.tasks["lee"]["encode"]
    traj = unescape(md.split("## Training trajectories")[1])
    assert (f"Truncated: mlm-300: {enc['truncated']} of {enc['n']} texts at max_length = {enc['max_length']} "
            "tokens") in traj


# --- reference protocol ---------------------------------------------------------------------------------------


def test_reference_protocol_companion_is_tabulated_side_by_side(analysed, tmp_path, drawn):
    res = subset(analysed[0], poolings=["mean", "cls", "max"], layers=[2], tasks=["lee"])
    res.paper = paper_companion(res)
    md = build([res], tmp_path, drawn)
    body = sections(md)["lee: default vs reference protocol (tiny-a)"]
    (table,) = tables(body)
    got = {(r["pooling"], r["metric"]): r for r in table}
    assert {p for p, _ in got} == {"mean", "cls", "max", "weighted"}
    for (p, metric), r in got.items():
        dm, _, rm = metric.partition(" vs ")
        rm = rm or dm
        d, ref = r["default protocol (layer, n)"], r["reference protocol (layer, n)"]
        if d != "–":
            want = res.value('lee', p, 2, dm)
            assert d == f"{cell(want)} (layer 2, n = {want['n']})"
        if ref != "–":
            want = res.paper.value('lee', p, 2, rm)
            assert ref == f"{want['value']:.4g} (layer 2, n = {want['n']})"
    assert got[("max", "rank_at_variance vs rank_90")]["reference protocol (layer, n)"] != "–"
    assert "different quantities" in got[("mean", "alignment vs alignment_class_conditional")]["note"]
    assert got[("weighted", "effective_rank")]["default protocol (layer, n)"] == "–"
    assert got[("cls", "effective_rank")]["reference protocol (layer, n)"] == "–"


def test_a_standalone_reference_protocol_result_reports_cleanly(analysed, tmp_path, drawn):
    paper = paper_companion(subset(analysed[0], layers=[2], tasks=["lee"]))
    md = build([paper], tmp_path, drawn)
    secs = sections(md)
    # no cosine histograms under the reference protocol: not written, and the section says why
    cos = secs["lee, last layer (2 of 2): pairwise cosine similarity"]
    assert "Not drawn:" in cos and "cosine histograms" in cos and "![" not in cos
    assert not list(tmp_path.glob("*cosines*"))
    for what in ("eigenspectrum", "alignment-uniformity", "effective-rank", "probes"):
        assert f"lee-Llast-{what}" in drawn
    au = drawn["lee-Llast-alignment-uniformity"].axes[0]
    assert "class-conditional" in au.get_ylabel()
    (table,) = tables(secs["lee, last layer (2 of 2)"])
    assert {"uniformity", "effective_rank", "rank_90", "alignment_class_conditional"} <= set(table[0])
    for row in table:
        assert row["rank_90"] == f"{paper.value('lee', row['pooling'], 2, 'rank_90')['value']:.4g}"
    assert "without intervals" in md


# --- the confidence used -------------------------------------------------------------------------------------------


def test_a_report_at_confidence_0_9_labels_every_interval_90_percent(analysed_90, tmp_path, drawn):
    res, cmp = analysed_90
    assert res.options["confidence"] == 0.9 and cmp.options["confidence"] == 0.9
    md = build([res], tmp_path, drawn, comparisons=[cmp])
    html = (tmp_path / "index.html").read_text()
    assert "95%" not in md and "95%" not in html
    assert "jackknife over texts at 90% confidence" in md
    assert "Intervals at 90%;" in md and "expect about 10% to exclude 0 by chance" in md
    lines = _significant_lines(md)
    assert lines and all(ln.startswith("- Significant (90% CI excludes 0)") for ln in lines)
    diff_tables = [t for t in tables(md) if t and "significant" in t[0]]  # one per layer, in layer order
    assert diff_tables and all("diff (second − first) [90% CI]" in t[0] for t in diff_tables)
    rows = sorted(cmp.differences, key=lambda r: int(r["layer"]))
    table = [row for t in diff_tables for row in t]
    assert any(outside_zero(r) for r in rows) and not all(outside_zero(r) for r in rows)
    for row, r in zip(table, rows, strict=True):  # the table's verdicts, from the rows' own numbers
        assert row["name"] == r["name"] and row["significant"] == ("yes" if outside_zero(r) else "no")
    labels = [t for fig in drawn.values() for t in texts(fig) if "CI" in t]
    assert labels and all("90% CI" in t for t in labels)
    assert not [t for fig in drawn.values() for t in _all_text(fig) if "95%" in t]
    assert "value [90% CI]" in res._repr_html_()


def test_a_report_of_results_at_two_confidences_names_each_level(analysed, analysed_90, tmp_path, drawn):
    res90 = analysed_90[0]
    res95 = subset(analysed[0], poolings=["mean", "max"], tasks=["lee"])
    md = build([res90, res95], tmp_path, drawn)
    assert "confidence 90% for tiny-90, 95% for tiny-a" in unescape(md)
    au = texts(drawn["lee-Llast-alignment-uniformity"])
    assert any("CIs: 90% for tiny-90, 95% for tiny-a" in t for t in au)
    assert "value [95% CI]" in res95._repr_html_() and "value [90% CI]" in res90._repr_html_()


def _all_text(fig) -> list[str]:
    import matplotlib.text

    return [t.get_text() for t in fig.findobj(matplotlib.text.Text)]


# --- Markdown, HTML, PDF ------------------------------------------------------------------------------------------


class _Html(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids, self.links, self.headings, self.imgs, self.text = set(), [], [], [], []
        self._in_heading = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "a" and a.get("href", "").startswith("#"):
            self.links.append(a["href"][1:])
        if tag in ("h1", "h2", "h3", "h4"):
            self.headings.append(a.get("id"))
        if tag == "img":
            self.imgs.append(a.get("src", ""))

    def handle_data(self, data):
        self.text.append(data)


def test_html_is_rendered_markdown_with_a_working_table_of_contents(analysed, tmp_path, drawn):
    a = subset(analysed[0], poolings=["max"], layers=[2], tasks=["lee"], name="model_*with*_[marks]")
    cmp = fake_compare(a, shifted(a, 1.1, "other|name"))
    R.build_report([a], tmp_path, comparisons=[cmp], formats=("png",), title="My report")
    text = (tmp_path / "index.html").read_text()
    parser = _Html()
    parser.feed(text)
    parser.close()
    for marker in ("**", "`", "![", "|---"):
        assert marker not in text, marker
    assert "<table>" in text and "<strong>" in text
    assert parser.links and set(parser.links) <= parser.ids
    assert all(h for h in parser.headings)  # every heading has an id ...
    assert set(parser.headings[2:]) <= set(parser.links)  # ... and the contents link every section
    assert parser.imgs and all(s.startswith("data:image/png;base64,") for s in parser.imgs)
    assert len(parser.imgs) == len(list(tmp_path.glob("*.png")))
    assert "model_*with*_[marks]" in "".join(parser.text) and "<em>" not in text  # data never becomes markup
    assert "other|name" in "".join(parser.text)


def test_pdfs_embed_truetype_fonts_not_type3(analysed, tmp_path):
    res = subset(analysed[0], poolings=["max"], layers=[2], tasks=["polarity"])
    res.arrays = {k: v for k, v in res.arrays.items() if not k.startswith("hist|")}  # fewer figures, same fonts
    R.build_report([res], tmp_path, formats=("png", "pdf"))
    pdfs = list(tmp_path.glob("*.pdf"))
    assert len(pdfs) == len(list(tmp_path.glob("*.png"))) >= 3
    for pdf in pdfs:
        data = pdf.read_bytes()
        assert b"/Subtype /Type3" not in data, pdf.name
        assert b"/FontFile2" in data, pdf.name
    assert matplotlib.rcParams["pdf.fonttype"] == 3  # set only while saving


def test_a_figure_with_nothing_to_draw_is_not_written_and_says_why(analysed, tmp_path, drawn):
    res = subset(analysed[0], poolings=["max"], layers=[2], tasks=["polarity"])
    res.arrays = {k: v for k, v in res.arrays.items() if not k.startswith("hist|")}
    res.probes = []
    md = build([res], tmp_path, drawn)
    secs = sections(md)
    assert secs["polarity, last layer (2 of 2): pairwise cosine similarity"].strip().startswith(
        "Not drawn: no cosine")
    assert secs["polarity, last layer (2 of 2): probes"].strip().startswith("Not drawn: no probe scores")
    assert not list(tmp_path.glob("*cosines*")) and not list(tmp_path.glob("*probes*"))


def test_report_validates_its_inputs(analysed, tmp_path):
    with pytest.raises(ValueError, match="results"):
        R.build_report([], tmp_path)
    with pytest.raises(ValueError, match="comparisons"):
        R.build_report([analysed[0]], tmp_path, comparisons=[analysed[0]])
    with pytest.raises(ValueError, match="formats"):
        R.build_report([analysed[0]], tmp_path, formats=("gif",))


# --- the public plotting API --------------------------------------------------------------------------------------


def test_plot_api_draws_every_figure_and_validates_arguments(analysed):
    import matplotlib.pyplot as plt

    a, b = analysed
    res = [a, b]
    fig = eg.plot.alignment_uniformity(res, "lee", pooling="max", layer=-1)
    (ax,) = axes_with_data(fig)
    assert len(ax.containers) == 2
    assert any("max pooling" in t for t in texts(fig)) and any("last layer (2 of 2)" in t for t in texts(fig))
    cmp = fake_compare(subset(a, tasks=["lee"]), subset(b, tasks=["lee"]))
    ckpts = [shifted(a, 1 + k / 10, f"c{k}", trajectory={"run": "r", "step": k, "tokens": None, "objective": None})
             for k in (1, 2, 3)]
    figs = [eg.plot.eigenspectrum(res, "lee", pooling=["mean", "max"], layer=1),
            eg.plot.metric_by_pooling(res, "polarity", "uniformity", layer=0),
            eg.plot.layer_profile(res, "lee", pooling="cls"),
            eg.plot.cosine_histogram(res, "polarity", pooling="attention"),
            eg.plot.probes(res, "lee", pooling="max"),
            eg.plot.differences(cmp, "lee", pooling="max", layer=1),
            eg.plot.trajectory(ckpts, "lee", pooling="max")]
    assert len(figs[0].axes) == 2 and len(figs[2].axes) >= 5
    for f in [fig, *figs]:
        axes_with_data(f)
        plt.close(f)
    for name in eg.plot.__all__:
        if not isinstance(getattr(eg.plot, name), type):  # functions; NothingToDraw and the warning are classes
            assert "Example::" in getattr(eg.plot, name).__doc__
    with pytest.raises(ValueError, match=r"task: expected one of \['lee', 'polarity'\], got 'sst2'"):
        eg.plot.eigenspectrum(res, "sst2")
    with pytest.raises(ValueError, match=r"pooling: expected one or more of \['mean', 'max', 'cls', 'attention'\]"):
        eg.plot.alignment_uniformity(res, "lee", pooling="native")
    with pytest.raises(ValueError, match=r"layer: expected one of \[0, 1, 2\]"):
        eg.plot.cosine_histogram(res, "lee", layer=7)
    with pytest.raises(ValueError, match="metric: expected one of"):
        eg.plot.layer_profile(res, "lee", "accuracy")
    with pytest.raises(ValueError, match="checkpoints"):
        eg.plot.trajectory(res, "lee")
    with pytest.raises(ValueError, match="results"):
        eg.plot.probes([], "lee")
