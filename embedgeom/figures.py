"""Matplotlib figures of analysis results, and the report that assembles them (matplotlib imported lazily).

Conventions: spectra are compared by *shape* (lambda / sum lambda on log-log axes: raw eigenvalues mix a
model's overall scale into its shape); every point estimate is drawn with its interval; models are told
apart by colour (Okabe-Ito, colour-blind safe) and poolings by marker, named in legends rather than text
labels next to points, so labels never overlap. Every function returns a ``Figure``; those drawing a single
panel accept ``ax=``.
"""

from __future__ import annotations

import base64
import html
import itertools
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .results import AnalysisResult, ComparisonResult, array_key
from .storage import inside, safe_name, unique_name

OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")
MARKERS = {"mean": "o", "cls": "s", "max": "^", "attention": "D", "native": "P", "paper_attention": "v"}
_Z95 = 1.96


def _plt():
    import matplotlib

    if matplotlib.get_backend().lower() not in ("agg", "pdf", "svg") and not _interactive():
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _interactive() -> bool:
    import sys

    return hasattr(sys, "ps1") or "ipykernel" in sys.modules


def _axes(ax: Any, figsize: tuple[float, float]) -> tuple[Any, Any]:
    plt = _plt()
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize, layout="constrained")
        return fig, ax
    return ax.figure, ax


def _half_width(row: dict) -> float:
    lo, hi, v = row.get("low"), row.get("high"), row.get("value")
    if lo is None or hi is None or not (np.isfinite(lo) and np.isfinite(hi)):
        se = row.get("stderr")
        return _Z95 * se if se is not None and np.isfinite(se) else 0.0
    return max(v - lo, hi - v)


def _colour(i: int) -> str:
    return OKABE_ITO[i % len(OKABE_ITO)]


def _last_layer(res: AnalysisResult) -> int:
    return int(res.checkpoint.get("num_layers", max(k[2] for k in res.measured())))


def _layer(res: AnalysisResult, layer: int) -> int:
    return layer % (_last_layer(res) + 1)


def _poolings(results: Sequence[AnalysisResult], task: str) -> list[str]:
    seen: dict[str, None] = {}
    for r in results:
        for t, p, _ in r.measured():
            if t == task:
                seen.setdefault(p)
    return list(seen)


def tasks_of(results: Sequence[AnalysisResult]) -> list[str]:
    seen: dict[str, None] = {}
    for r in results:
        for t in r.tasks:
            seen.setdefault(t)
    return list(seen)


# --- single-panel figures -------------------------------------------------------------------------------

def eigenspectrum_figure(results: Sequence[AnalysisResult], task: str, pooling: str = "mean", layer: int = -1, *,
                         ax: Any = None, fit: bool = True) -> Any:
    """Normalised covariance eigenspectra (lambda_k / sum lambda) vs rank, log-log, one line per model, with
    the alpha-ReQ power-law fit over its rank window drawn dashed."""
    fig, ax = _axes(ax, (5.0, 3.8))
    for i, res in enumerate(results):
        lay = _layer(res, layer)
        key = array_key("spectrum", task, pooling, lay)
        if key not in res.arrays:
            continue
        ev = res.arrays[key]
        ev = ev[ev > 0]
        p = ev / ev.sum()
        k = np.arange(1, len(p) + 1)
        ax.loglog(k, p, color=_colour(i), lw=1.6, label=res.name)
        if fit:
            try:
                a = res.value(task, pooling, lay, "alpha_req")
            except KeyError:
                continue
            if not np.isfinite(a["value"]):
                continue
            from .metrics import alpha_req
            from .metrics.spectrum import Spectrum

            full = res.arrays[key]
            f = alpha_req(Spectrum(full, None, int(a["n"]), len(full), 0.0))  # the registered fit, recomputed
            kk = np.arange(f.window[0], f.window[1] + 1)
            ax.loglog(kk, np.exp(f.intercept) * kk ** (-f.alpha) / full.sum(), color=_colour(i), lw=1.0, ls="--",
                      label=f"fit k={f.window[0]}..{f.window[1]}: α = {a['value']:.2f} ± {_half_width(a):.2f}")
    ax.set_xlabel("rank k")
    ax.set_ylabel("λ_k / Σλ  (fraction of variance)")
    ax.set_title(f"{task}: {pooling} pooling eigenspectrum")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=7, frameon=False)
    return fig


def alignment_uniformity_figure(results: Sequence[AnalysisResult], task: str, *, layer: int = -1, ax: Any = None,
                                trajectory: Sequence[AnalysisResult] | Mapping[str, Sequence[AnalysisResult]]
                                | None = None, trajectory_pooling: str = "mean") -> Any:
    """Alignment (y) vs uniformity (x) for one task: one point per model x pooling with 95% interval
    whiskers on both axes; colour = model, marker = pooling (legends, no point labels). ``trajectory``: results
    of successive checkpoints of one run (or ``{label: results}`` for several runs), drawn as small points
    joined by arrows for ``trajectory_pooling``, first checkpoint hollow. Lower-left is better."""
    own = ax is None
    fig, ax = _axes(ax, (6.4, 4.2))
    plotted_pools: dict[str, None] = {}
    unpaired: list[tuple[int, str, Any]] = []  # (model, pooling, uniformity) where the task has no positive pairs
    for i, res in enumerate(results):
        lay = _layer(res, layer)
        for pooling in _poolings([res], task):
            try:
                u = res.value(task, pooling, lay, "uniformity")
            except KeyError:
                continue
            try:
                a = res.value(task, pooling, lay, "alignment")
            except KeyError:
                unpaired.append((i, pooling, u))
                continue
            ax.errorbar(u["value"], a["value"], xerr=_half_width(u), yerr=_half_width(a), color=_colour(i),
                        marker=MARKERS.get(pooling, "o"), ms=6, capsize=2, lw=1, ls="none")
            plotted_pools.setdefault(pooling)
    runs = {"": trajectory} if isinstance(trajectory, Sequence) else dict(trajectory or {})
    names = [r.name for r in results]
    traj_handles = []
    for j, (label, seq) in enumerate(runs.items()):
        colour = _colour(names.index(label)) if label in names else _colour(len(results) + j)
        pts = []
        for res in seq:
            try:
                lay = _layer(res, layer)
                pts.append((res.value(task, trajectory_pooling, lay, "uniformity")["value"],
                            res.value(task, trajectory_pooling, lay, "alignment")["value"]))
            except KeyError:
                continue
        if not pts:
            continue
        xs, ys = zip(*pts, strict=True)
        ax.plot(xs[1:], ys[1:], ls="none", marker=".", color=colour, ms=5)
        ax.plot(xs[:1], ys[:1], ls="none", marker="o", mfc="white", color=colour, ms=6)
        for (x0, y0), (x1, y1) in itertools.pairwise(pts):
            ax.annotate("", xy=(x1, y1), xytext=(x0, y0), arrowprops={"arrowstyle": "->", "color": colour, "lw": 1})
        if label:
            from matplotlib.lines import Line2D

            traj_handles.append(Line2D([], [], color=colour, marker=".", label=f"{label}: checkpoints"))
    uniformity_only = not plotted_pools and bool(unpaired)
    if uniformity_only:  # no alignment without positive pairs: uniformity per model (rows) and pooling (marker)
        pools = list(dict.fromkeys(p for _, p, _ in unpaired))
        for i, pooling, u in unpaired:
            y = i + 0.5 * (pools.index(pooling) - (len(pools) - 1) / 2) / max(1, len(pools))
            ax.errorbar(u["value"], y, xerr=_half_width(u), color=_colour(i), marker=MARKERS.get(pooling, "o"), ms=6,
                        capsize=2, lw=1, ls="none")
            plotted_pools.setdefault(pooling)
        ax.set_yticks(range(len(results)), [r.name for r in results], fontsize=7)
        ax.invert_yaxis()
    elif not plotted_pools:
        ax.text(0.5, 0.5, f"no alignment or uniformity for {task}", ha="center", va="center",
                transform=ax.transAxes, fontsize=9)
    from matplotlib.lines import Line2D

    model_handles = [Line2D([], [], color=_colour(i), marker="o", ls="none", label=r.name)
                     for i, r in enumerate(results)] + traj_handles
    pool_handles = [Line2D([], [], color="0.3", marker=MARKERS.get(p, "o"), ls="none", label=p) for p in plotted_pools]
    if own:  # legends outside the axes, laid out by constrained layout
        fig.legend(handles=model_handles, title="model", fontsize=7, title_fontsize=8, loc="outside right upper",
                   frameon=False)
        if pool_handles:
            fig.legend(handles=pool_handles, title="pooling", fontsize=7, title_fontsize=8,
                       loc="outside right lower", frameon=False)
    else:
        leg = ax.legend(handles=model_handles, title="model", fontsize=6, title_fontsize=7, loc="upper right")
        ax.add_artist(leg)
        if pool_handles:
            ax.legend(handles=pool_handles, title="pooling", fontsize=6, title_fontsize=7, loc="lower right")
    ax.set_xlabel("uniformity  (log E exp(-2‖z-z'‖²); lower = more uniform)")
    if uniformity_only:
        ax.set_title(f"{task}: uniformity (95% CI); no pairs, no alignment")
        ax.grid(True, axis="x", alpha=0.3)
        _plain_ticks(ax, y=False)
        return fig
    ax.set_ylabel("alignment  (E‖z-z⁺‖²; lower = closer positives)")
    ax.set_title(f"{task}: alignment vs uniformity (95% CI)")
    ax.grid(True, alpha=0.3)
    _plain_ticks(ax)
    return fig


def _plain_ticks(ax: Any, *, x: bool = True, y: bool = True) -> None:
    """Each tick shows its own value (e.g. -2.5e-07) instead of a shared offset/scale note, which matplotlib
    places where it collides with the axis label; near-collapsed encoders have uniformities of ~1e-7."""
    from matplotlib.ticker import FuncFormatter

    fmt = FuncFormatter(lambda v, _pos: f"{v:.3g}")
    if x:
        ax.xaxis.set_major_formatter(fmt)
    if y:
        ax.yaxis.set_major_formatter(fmt)


def metric_by_pooling_figure(results: Sequence[AnalysisResult], task: str, metric: str = "effective_rank", *,
                             layer: int = -1, ax: Any = None) -> Any:
    """Grouped bars: ``metric`` per pooling, one bar per model, 95% interval whiskers."""
    fig, ax = _axes(ax, (5.6, 3.6))
    pools = _poolings(results, task)
    width = 0.8 / max(len(results), 1)
    for i, res in enumerate(results):
        vals, errs = [], []
        for p in pools:
            try:
                r = res.value(task, p, _layer(res, layer), metric)
                vals.append(r["value"])
                errs.append(_half_width(r))
            except KeyError:
                vals.append(np.nan)
                errs.append(0.0)
        x = np.arange(len(pools)) + (i - (len(results) - 1) / 2) * width
        ax.bar(x, vals, width * 0.92, yerr=errs, color=_colour(i), capsize=2, label=res.name)
    ax.set_xticks(np.arange(len(pools)), pools)
    ax.set_ylabel(metric.replace("_", " "))
    ax.set_title(f"{task}: {metric.replace('_', ' ')} by pooling (95% CI)")
    ax.legend(fontsize=7, frameon=False)
    ax.grid(True, axis="y", alpha=0.3)
    _plain_ticks(ax, x=False)
    return fig


def probe_figure(results: Sequence[AnalysisResult], *, pooling: str = "mean", layer: int = -1, ax: Any = None) -> Any:
    """Main probe score per task (accuracy for classification, Spearman for similarity), bars per model,
    +-1.96 standard errors."""
    fig, ax = _axes(ax, (6.0, 3.6))
    tasks = tasks_of(results)
    width = 0.8 / max(len(results), 1)
    labels = []
    for t in tasks:
        metric = None
        for res in results:
            for r in res.probes:
                if r["task"] == t and r["pooling"] == pooling and (r["probe"], r["metric"]) in (
                        ("linear", "accuracy"), ("cosine", "spearman")):
                    metric = metric or (r["probe"], r["metric"])
        labels.append((t, metric))
    for i, res in enumerate(results):
        vals, errs = [], []
        for t, metric in labels:
            row = next((r for r in res.probes if metric and r["task"] == t and r["pooling"] == pooling
                        and int(r["layer"]) == _layer(res, layer) and (r["probe"], r["metric"]) == metric), None)
            vals.append(np.nan if row is None else row["value"])
            errs.append(0.0 if row is None or not np.isfinite(row["stderr"]) else _Z95 * row["stderr"])
        x = np.arange(len(labels)) + (i - (len(results) - 1) / 2) * width
        ax.bar(x, vals, width * 0.92, yerr=errs, color=_colour(i), capsize=2, label=res.name)
    ax.set_xticks(np.arange(len(labels)), [f"{t}\n{m[0]} {m[1]}" if m else f"{t}\n(no probe)" for t, m in labels],
                  fontsize=7)
    ax.set_ylabel("probe score")
    ax.set_title(f"probes on {pooling} pooling (±1.96 s.e.)")
    ax.legend(fontsize=7, frameon=False)
    ax.grid(True, axis="y", alpha=0.3)
    return fig


def layer_profile_figure(results: Sequence[AnalysisResult], task: str, metric: str = "effective_rank", *,
                         pooling: str = "mean", ax: Any = None) -> Any:
    """``metric`` against hidden layer (0 = embeddings) with a 95% band, one line per model."""
    fig, ax = _axes(ax, (5.0, 3.6))
    for i, res in enumerate(results):
        rows = sorted((r for r in res.metrics if r["task"] == task and r["pooling"] == pooling
                       and r["metric"] == metric), key=lambda r: int(r["layer"]))
        if not rows:
            continue
        xs = np.array([int(r["layer"]) for r in rows])
        v = np.array([r["value"] for r in rows])
        hw = np.array([_half_width(r) for r in rows])
        ax.plot(xs, v, marker="o", color=_colour(i), label=res.name)
        ax.fill_between(xs, v - hw, v + hw, color=_colour(i), alpha=0.2, lw=0)
    ax.set_xlabel("layer (0 = embedding output)")
    ax.set_ylabel(metric.replace("_", " "))
    ax.set_title(f"{task}: {metric.replace('_', ' ')} by layer ({pooling})")
    ax.legend(fontsize=7, frameon=False)
    ax.grid(True, alpha=0.3)
    _plain_ticks(ax, x=False)
    return fig


def cosine_histogram_figure(results: Sequence[AnalysisResult], task: str, pooling: str = "mean", *,
                            layer: int = -1, ax: Any = None) -> Any:
    """Density of pairwise cosine similarities (sampled pairs), one step line per model."""
    fig, ax = _axes(ax, (5.0, 3.4))
    for i, res in enumerate(results):
        key = array_key("hist", task, pooling, _layer(res, layer))
        if key not in res.arrays:
            continue
        counts = res.arrays[key].astype(float)
        bins = res.options.get("histogram", {}).get("bins", len(counts))
        edges = np.linspace(-1.0, 1.0, bins + 1)
        dens = counts / counts.sum() / np.diff(edges)
        ax.stairs(dens, edges, color=_colour(i), lw=1.6, label=res.name)
    ax.set_xlabel("cosine similarity between two texts")
    ax.set_ylabel("density")
    ax.set_title(f"{task}: pairwise cosines ({pooling})")
    ax.legend(fontsize=7, frameon=False)
    ax.grid(True, alpha=0.3)
    return fig


def difference_figure(cmp: ComparisonResult, task: str, *, pooling: str = "mean", layer: int | None = None,
                      ax: Any = None) -> Any:
    """Forest plot of standardised paired differences (b - a) / s.e. per metric for one task, pooling and
    layer (default: the deepest layer compared); filled markers where the 95% interval excludes zero."""
    fig, ax = _axes(ax, (5.4, 4.2))
    rows = [r for r in cmp.differences if r["task"] == task and r["pooling"] == pooling]
    if layer is None:
        layer = max((int(r["layer"]) for r in rows), default=0)
    rows = [r for r in rows if int(r["layer"]) == layer and np.isfinite(r["stderr"]) and r["stderr"] > 0]
    names = [r["name"] for r in rows]
    z = [r["diff"] / r["stderr"] for r in rows]
    y = np.arange(len(rows))
    for yi, zi, r in zip(y, z, rows, strict=True):
        ax.plot([zi], [yi], marker="o", color=_colour(1 if r["significant"] else 0),
                mfc=_colour(1) if r["significant"] else "white", ls="none")
    ax.axvline(0, color="0.5", lw=0.8)
    for b in (-_Z95, _Z95):
        ax.axvline(b, color="0.7", lw=0.8, ls=":")
    ax.set_yticks(y, names, fontsize=7)
    ax.set_xlabel(f"(b − a) / s.e.   a = {cmp.a}, b = {cmp.b}")
    ax.set_title(f"{task}: paired differences ({pooling}, layer {layer}); filled = 95% CI excludes 0", fontsize=9)
    ax.grid(True, axis="x", alpha=0.3)
    return fig


# --- report ---------------------------------------------------------------------------------------------

def _table_md(rows: list[list[str]], header: list[str]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def _fmt(v: Any, se: Any = None) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    s = f"{v:.4g}"
    if se is not None and isinstance(se, (int, float)) and math.isfinite(se) and se > 0:
        s += f" ± {_Z95 * se:.2g}"
    return s


def summary_rows(results: Sequence[AnalysisResult], task: str,
                 metrics: Sequence[str] = ("uniformity", "alignment", "effective_rank", "isoscore", "alpha_req")
                 ) -> tuple[list[str], list[list[str]]]:
    header = ["model", "pooling", *metrics, "n"]
    rows = []
    for res in results:
        for p in _poolings([res], task):
            lay = _last_layer(res)
            cells, n = [], "–"
            for m in metrics:
                try:
                    r = res.value(task, p, lay, m)
                    cells.append(_fmt(r["value"], r["stderr"]))
                    n = str(r["n"]) if m != "alignment" else n
                except KeyError:
                    cells.append("–")
            rows.append([res.name, p, *cells, n])
    return header, rows


def _save(fig: Any, out: Path, stem: str, formats: Sequence[str]) -> list[Path]:
    plt = _plt()
    paths = []
    for ext in formats:
        path = inside(out, f"{stem}.{ext}")
        fig.savefig(path, dpi=150 if ext == "png" else None)
        paths.append(path)
    plt.close(fig)
    return paths


def compute_dtype_note(result: AnalysisResult) -> str:
    """The forward-pass dtype(s) a result's embeddings were computed in, and the outcome of ``auto``'s check."""
    used: dict[str, None] = {}
    rejected: dict[str, None] = {}
    for card in result.tasks.values():
        enc = card.get("encode", {})
        used.setdefault(str(enc.get("compute_dtype", "?")))
        check = enc.get("precision_check")
        if check and not check.get("passed"):
            rejected.setdefault(str(check.get("dtype")))
    note = "computed in " + " and ".join(used)
    if rejected:
        note += f" ({' and '.join(rejected)} failed the precision check)"
    return note


def build_report(results: Sequence[AnalysisResult], out: str | Path, *,
                 comparisons: Sequence[ComparisonResult] = (), title: str = "embedgeom report",
                 formats: Sequence[str] = ("png", "pdf")) -> Path:
    """Write every figure (PNG and PDF) plus ``index.md`` and a self-contained ``index.html`` to ``out``."""
    if not results:
        raise ValueError("results: expected at least one analysis result, got none.")
    out = Path(out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    sections: list[tuple[str, str | None, str]] = []  # (heading, png path, markdown body)
    intro = ["Models: " + ", ".join(f"**{r.name}** (`{r.checkpoint.get('spec')}`, "
                                    f"{r.checkpoint.get('num_parameters', 0) / 1e6:.1f}M params, "
                                    f"{r.options.get('protocol', 'default')} protocol, {compute_dtype_note(r)})"
                                    for r in results),
             "", "Intervals are 95% jackknife intervals over texts (see each result's `method`); n is the number of "
             "texts (positive pairs for alignment)."]
    sections.append((title, None, "\n".join(intro)))
    used: set[str] = set()
    for task in tasks_of(results):
        tstem = unique_name(safe_name(task, default="task"), used)  # task names come from data: never a path
        header, rows = summary_rows(results, task)
        card = next((r.tasks[task] for r in results if task in r.tasks), {})
        desc = (f"{card.get('description', '')}. {card.get('n_texts', '?')} texts; positives: "
                f"{card.get('positive_rule')}.")
        sections.append((f"Task {task}", None, desc + "\n\n" + _table_md(rows, header)))
        stem = f"{tstem}-eigenspectrum"
        pools = _poolings(results, task)
        plt = _plt()
        fig, axes = plt.subplots(1, len(pools), figsize=(4.2 * len(pools), 3.6), layout="constrained", squeeze=False)
        for ax, p in zip(axes[0], pools, strict=True):
            eigenspectrum_figure(results, task, p, ax=ax)
        _save(fig, out, stem, formats)
        sections.append((f"{task}: eigenspectra (normalised, log-log)", f"{stem}.png", ""))
        for stem, fig, heading in (
            (f"{tstem}-alignment-uniformity", alignment_uniformity_figure(results, task), "alignment vs uniformity"),
            (f"{tstem}-effective-rank", metric_by_pooling_figure(results, task, "effective_rank"), "effective rank"),
            (f"{tstem}-cosines", cosine_histogram_figure(results, task), "pairwise cosine similarity"),
        ):
            _save(fig, out, stem, formats)
            sections.append((f"{task}: {heading}", f"{stem}.png", ""))
        if any(len({int(r["layer"]) for r in res.metrics if r["task"] == task}) > 1 for res in results):
            stem = f"{tstem}-layer-profile"
            _save(layer_profile_figure(results, task), out, stem, formats)
            sections.append((f"{task}: effective rank by layer", f"{stem}.png", ""))
        for cmp in comparisons:
            if any(r["task"] == task for r in cmp.differences):
                stem = (f"{tstem}-differences-{safe_name(cmp.a, default='a')}-vs-"
                        f"{safe_name(cmp.b, default='b')}")
                _save(difference_figure(cmp, task), out, stem, formats)
                top = max(int(r["layer"]) for r in cmp.differences if r["task"] == task)
                sig = [r for r in cmp.differences if r["task"] == task and r["significant"] and r["pooling"] == "mean"
                       and int(r["layer"]) == top]
                body = "Significant (95% CI excludes 0), mean pooling: " + (
                    ", ".join(f"{r['name']} {r['diff']:+.3g}" for r in sig) or "none")
                sections.append((f"{task}: {cmp.b} − {cmp.a}", f"{stem}.png", body))
    if any(r.probes for r in results):
        _save(probe_figure(results), out, "probes", formats)
        sections.append(("Probes (mean pooling)", "probes.png", ""))
    md = []
    for heading, img, body in sections:
        md.append(("# " if heading == title else "## ") + heading)
        if body:
            md.append(body)
        if img:
            md.append(f"![{heading}]({img})")
        md.append("")
    (out / "index.md").write_text("\n".join(md))
    (out / "index.html").write_text(_html(sections, out, title))
    return out / "index.md"


def _md_table_to_html(body: str) -> str:
    lines = [ln for ln in body.splitlines() if ln.startswith("|")]
    if len(lines) < 2:
        return f"<p>{html.escape(body)}</p>"
    text = "\n".join(ln for ln in body.splitlines() if not ln.startswith("|"))
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines[2:]]
    t = "<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"
    t += "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows) + "</table>"
    return (f"<p>{html.escape(text)}</p>" if text.strip() else "") + t


def _html(sections: list[tuple[str, str | None, str]], out: Path, title: str) -> str:
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>"
             "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
             "table{border-collapse:collapse;font-size:13px;margin:.5em 0}td,th{border:1px solid #ccc;"
             "padding:3px 7px;text-align:right}th{background:#f3f3f3}img{max-width:100%}</style></head><body>"]
    for heading, img, body in sections:
        tag = "h1" if heading == title else "h2"
        parts.append(f"<{tag}>{html.escape(heading)}</{tag}>")
        if body:
            parts.append(_md_table_to_html(body))
        if img:
            data = base64.b64encode((out / img).read_bytes()).decode()
            parts.append(f"<img alt='{html.escape(heading)}' src='data:image/png;base64,{data}'>")
    parts.append("</body></html>")
    return "\n".join(parts)
