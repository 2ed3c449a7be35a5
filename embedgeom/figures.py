"""Matplotlib figures of analysis results (matplotlib imported lazily). This module only draws: what the results
hold and which row answers a request are asked of :mod:`embedgeom.queries`; report assembly lives in
:mod:`embedgeom.report`; :mod:`embedgeom.plot` is the public plotting API over these functions.

Every figure is driven by what the results contain: ``pooling=None`` draws every pooling present (as panels,
or as series on a given ``ax``), ``layer=None`` the last layer each result measured for the task (``-1`` the
model's last layer, another negative index counts from it, ``k >= 0`` hidden layer ``k``; 0 = embedding output).
Nothing defaults to one pooling or layer. A task, pooling, layer or metric the results do not hold raises one
``ValueError`` listing what is present; a figure whose data is absent (e.g. cosine histograms of a
reference-protocol result) raises :class:`NothingToDraw`, a ``ValueError`` whose message says why.

Conventions: spectra are compared by *shape* (lambda / sum lambda on log-log axes: raw eigenvalues mix a
model's overall scale into its shape); every point estimate is drawn with its interval (reference-protocol rows
carry none, and their titles say so), labelled with the confidence level the results recorded (e.g. "90% CI";
probe scores, which carry a standard error only, are drawn and labelled as ±1.96 s.e.); models are told apart
by colour (Okabe-Ito, colour-blind safe) and poolings by marker and line style, named in legends rather than
text labels next to points, so labels never overlap. Every function returns a ``Figure``; ``ax=`` draws into
an existing Axes instead.
"""

from __future__ import annotations

import itertools
import math
import numbers
import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .queries import (
    Z95,
    alignment_metric,
    as_results,
    bounds,
    check_layer,
    check_metric,
    check_task,
    ci_label,
    comparison_label,
    comparison_poolings,
    comparison_tasks,
    half_width,
    histogram_of,
    is_finite,
    is_reference_protocol,
    layer_key,
    layer_key_text,
    layer_series,
    main_probe,
    metric_row,
    metrics_of,
    pooling_key,
    probe_row,
    resolve_layer,
    runs_of,
    select_poolings,
    spectrum_of,
    step_of,
    tasks_of,
    trajectory_of,
)
from .results import AnalysisResult, ComparisonResult

OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")
MARKERS = {"mean": "o", "cls": "s", "max": "^", "attention": "D", "native": "P", "paper_attention": "v",
           "weighted": "X"}
LINESTYLES = ("-", "--", ":", "-.")
#: Metrics a layer profile draws when none is named (those present).
LAYER_PROFILE_METRICS: tuple[str, ...] = ("effective_rank", "uniformity", "alignment", "rankme", "isoscore",
                                          "mean_cosine")
#: Metrics a checkpoint trajectory draws when none is named (those present).
TRAJECTORY_METRICS: tuple[str, ...] = ("uniformity", "alignment", "effective_rank", "rankme", "isoscore")


class NothingToDraw(ValueError):
    """The results hold nothing this figure can draw; the message says why (one line)."""


# --- matplotlib -------------------------------------------------------------------------------------------

def pyplot() -> Any:
    """``matplotlib.pyplot``, with the non-interactive Agg backend selected outside interactive sessions."""
    import matplotlib

    if matplotlib.get_backend().lower() not in ("agg", "pdf", "svg") and not _interactive():
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _interactive() -> bool:
    import sys

    return hasattr(sys, "ps1") or "ipykernel" in sys.modules


def _axes(ax: Any, figsize: tuple[float, float]) -> tuple[Any, Any]:
    if ax is None:
        fig, ax = pyplot().subplots(figsize=figsize, layout="constrained")
        return fig, ax
    return ax.figure, ax


def _grid(n: int, panel: tuple[float, float], cols: int = 4) -> tuple[Any, list[Any]]:
    """A figure with ``n`` panels, at most ``cols`` a row; unused cells removed."""
    cols = max(1, min(cols, n))
    rows = math.ceil(n / cols)
    fig, axes = pyplot().subplots(rows, cols, figsize=(panel[0] * cols, panel[1] * rows), layout="constrained",
                                squeeze=False)
    flat = list(axes.ravel())
    for extra in flat[n:]:
        fig.delaxes(extra)
    return fig, flat[:n]


def _colour(i: int) -> str:
    return OKABE_ITO[i % len(OKABE_ITO)]


def _plain_ticks(ax: Any, *, x: bool = True, y: bool = True) -> None:
    """Each tick shows its own value (e.g. -2.5e-07) instead of a shared offset/scale note, which matplotlib
    places where it collides with the axis label; near-collapsed encoders have uniformities of ~1e-7."""
    from matplotlib.ticker import FuncFormatter

    fmt = FuncFormatter(lambda v, _pos: f"{v:.3g}")
    if x:
        ax.xaxis.set_major_formatter(fmt)
    if y:
        ax.yaxis.set_major_formatter(fmt)


def _title(ax: Any, text: str, size: float = 9, width: int = 62) -> None:
    """A title wrapped onto lines of at most ``width`` characters, so it never runs into a legend."""
    ax.set_title("\n".join(textwrap.fill(line, width, break_long_words=False) for line in text.split("\n")),
                 fontsize=size)


def _label(metric: str) -> str:
    return metric.replace("_", " ")


def _layer_text(results: Sequence[AnalysisResult], task: str, layer: int | None, poolings: Sequence[str]) -> str:
    """'layer 2' when every drawn result uses one layer, else 'layers a: 6, b: 12'."""
    got = {}
    for r in results:
        lays = {resolve_layer(r, task, layer, p) for p in poolings} - {None}
        if lays:
            got[r.name] = sorted(lays)
    distinct = {tuple(v) for v in got.values()}
    if len(distinct) == 1:
        lays = next(iter(distinct))
        return f"layer {lays[0]}" if len(lays) == 1 else "layers " + ", ".join(map(str, lays))
    return "layers " + ", ".join(f"{n}: {'/'.join(map(str, v))}" for n, v in got.items())


def _no_intervals(results: Sequence[AnalysisResult]) -> bool:
    return any(is_reference_protocol(r) for r in results)


def _ci_note(results: Sequence[AnalysisResult], ci: str | None = None) -> str:
    """The interval a figure draws (``ci``; default: the results' own confidence level, e.g. '90% CI');
    reference-protocol results carry none."""
    paper = [r for r in results if is_reference_protocol(r)]
    ci = ci_label(results) if ci is None else ci
    if not paper:
        return ci
    if len(paper) == len(results):
        return "no intervals: reference protocol"
    return f"{ci}; reference protocol: no intervals"


def _legend_outside(fig: Any, handles: list[Any], title: str, loc: str = "outside right upper") -> None:
    if handles:
        fig.legend(handles=handles, title=title, fontsize=7, title_fontsize=8, loc=loc, frameon=False)


def _model_handles(results: Sequence[AnalysisResult], marker: str = "o", ls: str = "none") -> list[Any]:
    from matplotlib.lines import Line2D

    return [Line2D([], [], color=_colour(i), marker=marker, ls=ls, label=r.name) for i, r in enumerate(results)]


def _pooling_handles(poolings: Sequence[str], *, lines: bool = False) -> list[Any]:
    from matplotlib.lines import Line2D

    return [Line2D([], [], color="0.3", marker=MARKERS.get(p, "o"), ls=LINESTYLES[j % 4] if lines else "none",
                   label=p) for j, p in enumerate(poolings)]


# --- eigenspectra -------------------------------------------------------------------------------------------

def eigenspectrum_figure(results: Sequence[AnalysisResult] | AnalysisResult, task: str,
                         pooling: str | Sequence[str] | None = None, layer: int | None = None, *, ax: Any = None,
                         fit: bool = True) -> Any:
    """Normalised covariance eigenspectra (lambda_k / sum lambda) vs rank, log-log, one line per model, with
    the alpha-ReQ power-law fit over its rank window drawn dashed. One panel per pooling (``pooling=None``: all
    present); on a given ``ax`` several poolings are told apart by line style (fits omitted)."""
    results = as_results(results)
    check_task(results, task)
    pools = select_poolings(results, task, pooling)
    check_layer(results, task, layer, pools)
    panels = [p for p in pools if any(spectrum_of(r, task, p, layer) is not None for r in results)]
    if not panels:
        raise NothingToDraw(f"no eigenspectra saved for {task} ({', '.join(pools)} pooling, "
                            f"{_layer_text(results, task, layer, pools)}).")
    if ax is None:
        fig, axes = _grid(len(panels), (4.4, 3.7))
        for a, p in zip(axes, panels, strict=True):
            _draw_spectra(a, results, task, [p], layer, fit)
        return fig
    _draw_spectra(ax, results, task, panels, layer, fit and len(panels) == 1)
    return ax.figure


def _draw_spectra(ax: Any, results: Sequence[AnalysisResult], task: str, pools: Sequence[str], layer: int | None,
                  fit: bool) -> None:
    for j, pooling in enumerate(pools):
        for i, res in enumerate(results):
            full = spectrum_of(res, task, pooling, layer)
            if full is None:
                continue
            ev = full[full > 0]
            p = ev / ev.sum()
            k = np.arange(1, len(p) + 1)
            label = res.name if len(pools) == 1 else f"{res.name}, {pooling}"
            ax.loglog(k, p, color=_colour(i), lw=1.6, ls=LINESTYLES[j % 4], label=label)
            if fit:
                _draw_fit(ax, res, task, pooling, resolve_layer(res, task, layer, pooling), full, _colour(i))
    ax.set_xlabel("rank k")
    ax.set_ylabel("λ_k / Σλ  (fraction of variance)")
    what = f"{pools[0]} pooling" if len(pools) == 1 else ", ".join(pools)
    _title(ax, f"{task}: eigenspectrum, {what}, {_layer_text(results, task, layer, pools)}")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=6, frameon=False)


def _draw_fit(ax: Any, res: AnalysisResult, task: str, pooling: str, lay: int | None, full: np.ndarray,
              colour: str) -> None:
    a = metric_row(res, task, pooling, lay, "alpha_req")
    if a is None:
        return
    from .metrics import alpha_req
    from .metrics.moments import Spectrum

    try:
        f = alpha_req(Spectrum(full, None, int(a["n"]), len(full), 0.0))  # the registered fit, recomputed
    except ValueError:
        return
    kk = np.arange(f.window[0], f.window[1] + 1)
    ax.loglog(kk, np.exp(f.intercept) * kk ** (-f.alpha) / full.sum(), color=colour, lw=1.0, ls="--",
              label=f"fit k={f.window[0]}..{f.window[1]}: α = {a['value']:.2f} ± {half_width(a):.2f}")


# --- alignment vs uniformity ----------------------------------------------------------------------------------

def alignment_uniformity_figure(results: Sequence[AnalysisResult] | AnalysisResult, task: str, *,
                                pooling: str | Sequence[str] | None = None, layer: int | None = None, ax: Any = None,
                                trajectory: Sequence[AnalysisResult] | Mapping[str, Sequence[AnalysisResult]]
                                | None = None, trajectory_pooling: str | None = None) -> Any:
    """Alignment (y) vs uniformity (x) for one task: one point per model x pooling with interval whiskers on
    both axes; colour = model, marker = pooling (legends, no point labels). Lower-left is better. A task without
    positive pairs draws uniformity per model (rows) instead; reference-protocol results draw their
    class-conditional "alignment" (a different quantity, named on the axis). ``trajectory``: results of
    successive checkpoints of one run (or ``{label: results}`` for several runs), drawn as small points joined
    by arrows for ``trajectory_pooling`` (default: every pooling drawn), first checkpoint hollow."""
    results = as_results(results)
    check_task(results, task)
    pools = select_poolings(results, task, pooling)
    check_layer(results, task, layer, pools)
    own = ax is None
    ymetric = alignment_metric(results, task)
    points: list[tuple[int, str, dict, dict | None]] = []
    for i, res in enumerate(results):
        for p in pools:
            lay = resolve_layer(res, task, layer, p)
            u = metric_row(res, task, p, lay, "uniformity")
            if u is None:
                continue
            points.append((i, p, u, metric_row(res, task, p, lay, ymetric) if ymetric else None))
    if not points:
        raise NothingToDraw(f"no uniformity measured for {task} ({', '.join(pools)} pooling, "
                            f"{_layer_text(results, task, layer, pools)}).")
    fig, ax = _axes(ax, (6.4, 4.2))
    paired = [pt for pt in points if pt[3] is not None]
    drawn_pools: dict[str, None] = {}
    if paired:
        for i, p, u, a in paired:
            ax.errorbar(u["value"], a["value"], xerr=half_width(u), yerr=half_width(a), color=_colour(i),
                        marker=MARKERS.get(p, "o"), ms=6, capsize=2, lw=1, ls="none")
            drawn_pools.setdefault(p)
    else:  # no alignment without positive pairs: uniformity per model (rows) and pooling (marker)
        upools = list(dict.fromkeys(p for _, p, _, _ in points))
        for i, p, u, _ in points:
            y = i + 0.5 * (upools.index(p) - (len(upools) - 1) / 2) / max(1, len(upools))
            ax.errorbar(u["value"], y, xerr=half_width(u), color=_colour(i), marker=MARKERS.get(p, "o"), ms=6,
                        capsize=2, lw=1, ls="none")
            drawn_pools.setdefault(p)
        ax.set_yticks(range(len(results)), [r.name for r in results], fontsize=7)
        ax.invert_yaxis()
    traj_handles = _draw_trajectory_arrows(ax, results, task, layer, trajectory, trajectory_pooling, pools,
                                           ymetric if paired else None)
    model_handles = _model_handles(results) + traj_handles
    pool_handles = _pooling_handles(list(drawn_pools))
    if own:  # legends outside the axes, laid out by constrained layout
        _legend_outside(fig, model_handles, "model")
        _legend_outside(fig, pool_handles, "pooling", "outside right lower")
    else:
        leg = ax.legend(handles=model_handles, title="model", fontsize=6, title_fontsize=7, loc="upper right")
        ax.add_artist(leg)
        ax.legend(handles=pool_handles, title="pooling", fontsize=6, title_fontsize=7, loc="lower right")
    ax.set_xlabel("uniformity  (log E exp(-2‖z-z'‖²); lower = more uniform)")
    where = f"{', '.join(drawn_pools)} pooling, {_layer_text(results, task, layer, list(drawn_pools))}"
    missing = [results[i].name for i in dict.fromkeys(i for i, _, _, a in points if a is None)
               if paired and not any(j == i for j, _, _, _ in paired)]
    if missing:  # e.g. a reference-protocol result next to default ones: its "alignment" is another quantity
        where += f"; not drawn, no {ymetric}: {', '.join(missing)}"
    ci = _ci_note(results)
    if not paired:
        _title(ax, f"{task}: uniformity ({where}; {ci}); no pairs, no alignment")
        ax.grid(True, axis="x", alpha=0.3)
        _plain_ticks(ax, y=False)
        return fig
    if ymetric == "alignment":
        ax.set_ylabel("alignment  (E‖z-z⁺‖²; lower = closer positives)")
    else:
        ax.set_ylabel("class-conditional alignment (reference definition;\nnot Wang & Isola's alignment)")
    _title(ax, f"{task}: {_label(ymetric or '')} vs uniformity ({where}; {ci})")
    ax.grid(True, alpha=0.3)
    _plain_ticks(ax)
    return fig


def _draw_trajectory_arrows(ax: Any, results: Sequence[AnalysisResult], task: str, layer: int | None,
                            trajectory: Any, trajectory_pooling: str | None, pools: Sequence[str],
                            ymetric: str | None) -> list[Any]:
    if trajectory is None or ymetric is None:
        return []
    from matplotlib.lines import Line2D

    runs = dict(trajectory) if isinstance(trajectory, Mapping) else {"": list(trajectory)}
    names = [r.name for r in results]
    tpools = [trajectory_pooling] if trajectory_pooling else list(pools)
    handles = []
    for j, (label, seq) in enumerate(runs.items()):
        seq = as_results(seq, "trajectory")
        colour = _colour(names.index(label)) if label in names else _colour(len(results) + j)
        drawn = False
        for p in tpools:
            pts = []
            for res in seq:
                lay = resolve_layer(res, task, layer, p)
                u, a = metric_row(res, task, p, lay, "uniformity"), metric_row(res, task, p, lay, ymetric)
                if u is not None and a is not None:
                    pts.append((u["value"], a["value"]))
            if not pts:
                continue
            drawn = True
            xs, ys = zip(*pts, strict=True)
            ax.plot(xs[1:], ys[1:], ls="none", marker=".", color=colour, ms=5)
            ax.plot(xs[:1], ys[:1], ls="none", marker="o", mfc="white", color=colour, ms=6)
            for (x0, y0), (x1, y1) in itertools.pairwise(pts):
                ax.annotate("", xy=(x1, y1), xytext=(x0, y0), arrowprops={"arrowstyle": "->", "color": colour,
                                                                          "lw": 1})
        if drawn and label:
            handles.append(Line2D([], [], color=colour, marker=".", label=f"{label}: checkpoints"))
    return handles


# --- one metric by pooling ----------------------------------------------------------------------------------

def metric_by_pooling_figure(results: Sequence[AnalysisResult] | AnalysisResult, task: str,
                             metric: str = "effective_rank", *, pooling: str | Sequence[str] | None = None,
                             layer: int | None = None, ax: Any = None) -> Any:
    """Grouped bars: ``metric`` per pooling (``pooling=None``: all present), one bar per model, interval
    whiskers."""
    results = as_results(results)
    check_task(results, task)
    check_metric(results, task, metric)
    pools = select_poolings(results, task, pooling)
    check_layer(results, task, layer, pools)
    cells = {(i, p): metric_row(res, task, p, resolve_layer(res, task, layer, p), metric)
             for i, res in enumerate(results) for p in pools}
    pools = [p for p in pools if any(cells[(i, p)] for i in range(len(results)))]
    if not pools:
        raise NothingToDraw(f"{metric} is not defined for {task} at {_layer_text(results, task, layer, pools)}.")
    fig, ax = _axes(ax, (max(4.6, 1.3 * len(pools) + 2.4), 3.6))
    width = 0.8 / len(results)
    for i, res in enumerate(results):
        rows = [cells[(i, p)] for p in pools]
        vals = [np.nan if r is None else r["value"] for r in rows]
        errs = [0.0 if r is None else half_width(r) for r in rows]
        x = np.arange(len(pools)) + (i - (len(results) - 1) / 2) * width
        ax.bar(x, vals, width * 0.92, yerr=errs, color=_colour(i), capsize=2, label=res.name)
    ax.set_xticks(np.arange(len(pools)), pools)
    ax.set_ylabel(_label(metric))
    ci = _ci_note(results)
    _title(ax, f"{task}: {_label(metric)} by pooling ({', '.join(pools)}), {_layer_text(results, task, layer, pools)} "
               f"({ci})")
    ax.legend(fontsize=7, frameon=False)
    ax.grid(True, axis="y", alpha=0.3)
    _plain_ticks(ax, x=False)
    return fig


# --- probes -------------------------------------------------------------------------------------------------

def probe_figure(results: Sequence[AnalysisResult] | AnalysisResult, *, task: str | Sequence[str] | None = None,
                 pooling: str | Sequence[str] | None = None, layer: int | None = None, ax: Any = None) -> Any:
    """Each task's headline probe score (:func:`embedgeom.queries.main_probe`: accuracy for classification, Spearman for
    similarity, ...) per pooling, one bar per model, +-1.96 standard errors. ``task=None``: every task with
    probe scores; ``pooling=None``: every pooling; ``layer=None``: the last layer each model probed."""
    results = as_results(results)
    present = tasks_of(results)
    if task is None:
        tasks = [t for t in present if main_probe(results, t)]
        if not tasks:
            raise NothingToDraw("no probe scores in these results (analysed with probes=False, or no task has "
                                "labels or scored pairs).")
    else:
        tasks = [task] if isinstance(task, str) else list(task)
        for t in tasks:
            check_task(results, t)
    cats: list[tuple[str, str, tuple[str, str]]] = []
    for t in tasks:
        pools = select_poolings(results, t, pooling)
        check_layer(results, t, layer, pools)
        pm = main_probe(results, t)
        if pm is None:
            continue
        cats += [(t, p, pm) for p in pools
                 if any(probe_row(r, t, p, resolve_layer(r, t, layer, p), pm) for r in results)]
    if not cats:
        raise NothingToDraw(f"no probe scores for {', '.join(tasks)} at the requested pooling and layer "
                            "(analysed with probes=False, or the task has no labels or scored pairs).")
    fig, ax = _axes(ax, (max(5.0, 0.55 * len(cats) * max(1, len(results)) + 2.0), 3.8))
    width = 0.8 / len(results)
    for i, res in enumerate(results):
        rows = [probe_row(res, t, p, resolve_layer(res, t, layer, p), pm) for t, p, pm in cats]
        vals = [np.nan if r is None else r["value"] for r in rows]
        errs = [Z95 * r["stderr"] if r is not None and is_finite(r.get("stderr")) else 0.0 for r in rows]
        x = np.arange(len(cats)) + (i - (len(results) - 1) / 2) * width
        ax.bar(x, vals, width * 0.92, yerr=errs, color=_colour(i), capsize=2, label=res.name)
    ax.set_xticks(np.arange(len(cats)), [f"{t}\n{p}\n{pm[0]} {_label(pm[1])}" for t, p, pm in cats], fontsize=7)
    ax.set_ylabel("probe score")
    layers = _layer_text(results, cats[0][0], layer, [cats[0][1]]) if len(tasks) == 1 else (
        "last layer probed" if layer is None else f"layer {layer}")
    ci = _ci_note(results, "±1.96 s.e.")
    shown = ", ".join(dict.fromkeys(p for _, p, _ in cats))
    _title(ax, f"probes: {', '.join(dict.fromkeys(t for t, _, _ in cats))}, {shown} pooling, {layers} ({ci})")
    ax.legend(fontsize=7, frameon=False)
    ax.grid(True, axis="y", alpha=0.3)
    return fig


# --- layer profiles ------------------------------------------------------------------------------------------

def _metric_list(results: Sequence[AnalysisResult], task: str, metric: str | Sequence[str] | None,
                 default: Sequence[str]) -> list[str]:
    present = metrics_of(results, task)
    if metric is None:
        chosen = [m for m in default if m in present]
        if not chosen:
            raise NothingToDraw(f"none of {', '.join(default)} measured for {task}.")
        return chosen
    wanted = [metric] if isinstance(metric, str) else list(metric)
    for m in wanted:
        check_metric(results, task, m)
    return wanted


def _band(ax: Any, xs: np.ndarray, rows: Sequence[Mapping[str, Any]], colour: str, ls: str, marker: str,
          label: str | None) -> None:
    v = np.array([float(r["value"]) for r in rows])
    lo, hi = (np.array(b) for b in zip(*(bounds(r) for r in rows), strict=True))
    ax.plot(xs, v, marker=marker, ms=4, color=colour, ls=ls, lw=1.5, label=label)
    if len(xs) > 1:
        ax.fill_between(xs, lo, hi, color=colour, alpha=0.2, lw=0)
    else:
        ax.errorbar(xs, v, yerr=[v - lo, hi - v], color=colour, capsize=2, ls="none")


def layer_profile_figure(results: Sequence[AnalysisResult] | AnalysisResult, task: str,
                         metric: str | Sequence[str] | None = None, *, pooling: str | Sequence[str] | None = None,
                         ax: Any = None) -> Any:
    """Metrics against hidden layer (x = layer index, 0 = embedding output; one tick per layer measured), one
    line per model with its interval band. ``metric=None``: every one of :data:`LAYER_PROFILE_METRICS` present,
    a panel each; ``pooling=None``: every pooling, a row of panels each. On a given ``ax`` (one metric) poolings
    are told apart by line style."""
    results = as_results(results)
    check_task(results, task)
    pools = select_poolings(results, task, pooling)
    mets = _metric_list(results, task, metric, LAYER_PROFILE_METRICS)
    if ax is not None:
        if len(mets) != 1:
            raise ValueError(f"metric: one Axes draws one metric; got {mets}. Pass metric='{mets[0]}' or omit ax=.")
        if not any(layer_series(r, task, p, mets[0]) for r in results for p in pools):
            raise NothingToDraw(f"{mets[0]} is not defined at any layer of {task} ({', '.join(pools)}).")
        _draw_profile(ax, results, task, pools, mets[0], legend=True)
        return ax.figure
    panels = [(p, m) for p in pools for m in mets if any(layer_series(r, task, p, m) for r in results)]
    if not panels:
        raise NothingToDraw(f"{', '.join(mets)} not defined at any layer of {task} ({', '.join(pools)}).")
    cols = max(sum(1 for q, _ in panels if q == p) for p in pools)
    rows_p = list(dict.fromkeys(p for p, _ in panels))
    plt = pyplot()
    fig, axes = plt.subplots(len(rows_p), cols, figsize=(3.6 * cols + 1.4, 2.9 * len(rows_p)), layout="constrained",
                             squeeze=False)
    for r_i, p in enumerate(rows_p):
        ms = [m for q, m in panels if q == p]
        for c_i in range(cols):
            a = axes[r_i][c_i]
            if c_i >= len(ms):
                fig.delaxes(a)
                continue
            _draw_profile(a, results, task, [p], ms[c_i], legend=False)
    _legend_outside(fig, _model_handles(results, ls="-"), "model")
    return fig


def _draw_profile(ax: Any, results: Sequence[AnalysisResult], task: str, pools: Sequence[str], metric: str,
                  legend: bool) -> None:
    ticks: set[int] = set()
    for j, p in enumerate(pools):
        for i, res in enumerate(results):
            rows = layer_series(res, task, p, metric)
            if not rows:
                continue
            xs = np.array([int(r["layer"]) for r in rows])
            ticks.update(int(x) for x in xs)
            label = res.name if len(pools) == 1 else f"{res.name}, {p}"
            _band(ax, xs, rows, _colour(i), LINESTYLES[j % 4], MARKERS.get(p, "o"), label)
    ordered = sorted(ticks)
    step = max(1, math.ceil(len(ordered) / 14))
    ax.set_xticks(ordered[::step], [str(t) for t in ordered[::step]])
    ax.set_xlabel("layer (0 = embedding output)")
    ax.set_ylabel(_label(metric))
    what = f"{pools[0]} pooling" if len(pools) == 1 else ", ".join(pools)
    _title(ax, f"{task}: {_label(metric)} by layer, {what}")
    if legend:
        ax.legend(fontsize=6, frameon=False)
    ax.grid(True, alpha=0.3)
    _plain_ticks(ax, x=False)


# --- cosine histograms ------------------------------------------------------------------------------------------

def cosine_histogram_figure(results: Sequence[AnalysisResult] | AnalysisResult, task: str,
                            pooling: str | Sequence[str] | None = None, *, layer: int | None = None,
                            ax: Any = None) -> Any:
    """Density of pairwise cosine similarities (sampled pairs), one step line per model; one panel per
    pooling (``pooling=None``: all present), or line styles per pooling on a given ``ax``."""
    results = as_results(results)
    check_task(results, task)
    pools = select_poolings(results, task, pooling)
    check_layer(results, task, layer, pools)
    panels = [p for p in pools if any(histogram_of(r, task, p, layer) is not None for r in results)]
    if not panels:
        why = "; reference-protocol analyses save none" if _no_intervals(results) else ""
        raise NothingToDraw(f"no cosine histograms saved for {task} ({', '.join(pools)} pooling, "
                            f"{_layer_text(results, task, layer, pools)}){why}.")
    if ax is None:
        fig, axes = _grid(len(panels), (4.2, 3.3))
        for a, p in zip(axes, panels, strict=True):
            _draw_histograms(a, results, task, [p], layer)
        return fig
    _draw_histograms(ax, results, task, panels, layer)
    return ax.figure


def _draw_histograms(ax: Any, results: Sequence[AnalysisResult], task: str, pools: Sequence[str],
                     layer: int | None) -> None:
    for j, p in enumerate(pools):
        for i, res in enumerate(results):
            counts = histogram_of(res, task, p, layer)
            if counts is None:
                continue
            bins = int(res.options.get("histogram", {}).get("bins", len(counts)))
            if bins != len(counts):
                bins = len(counts)
            edges = np.linspace(-1.0, 1.0, bins + 1)
            dens = counts / counts.sum() / np.diff(edges)
            ax.stairs(dens, edges, color=_colour(i), lw=1.6, ls=LINESTYLES[j % 4],
                      label=res.name if len(pools) == 1 else f"{res.name}, {p}")
    ax.set_xlabel("cosine similarity between two texts")
    ax.set_ylabel("density")
    what = f"{pools[0]} pooling" if len(pools) == 1 else ", ".join(pools)
    _title(ax, f"{task}: pairwise cosines, {what}, {_layer_text(results, task, layer, pools)}")
    ax.legend(fontsize=6, frameon=False)
    ax.grid(True, alpha=0.3)


# --- comparisons -------------------------------------------------------------------------------------------------

def difference_figure(cmp: ComparisonResult, task: str, *, pooling: str | Sequence[str] | None = None,
                      layer: int | None = None, ax: Any = None) -> Any:
    """Forest plot of standardised paired differences diff / s.e. (diff = b − a, second minus first) per
    metric and probe for one task and layer (``layer=None``: the deepest compared; negative counts from the
    first model's last layer), with each row's interval; filled markers where the interval excludes zero. One
    panel per pooling (``pooling=None``: all compared; for a comparison of two poolings, the pooling pair)."""
    if not isinstance(cmp, ComparisonResult):
        raise ValueError(f"cmp: expected a ComparisonResult, got {type(cmp).__name__}.")
    tasks = comparison_tasks(cmp)
    if task not in tasks:
        raise ValueError(f"task: expected one of {tasks} (compared), got {task!r}.")
    rows = [r for r in cmp.differences if r["task"] == task]
    pools_all = list(dict.fromkeys(pooling_key(r) for r in rows))
    if pooling is not None:
        # a pooling name (either side of a pooling comparison) or a panel label; '-' stands for the label's '−'
        wanted = [p.replace(" - ", " − ") for p in ([pooling] if isinstance(pooling, str) else list(pooling))]

        def chosen(r: Mapping[str, Any], p: str) -> bool:
            return p in (pooling_key(r), r["pooling"], r.get("pooling_b"))

        bad = [p for p in wanted if not any(chosen(r, p) for r in rows)]
        if bad or not wanted:
            raise ValueError(f"pooling: expected one or more of {pools_all} (compared for {task!r}), got {pooling!r}.")
        rows = [r for r in rows if any(chosen(r, p) for p in wanted)]
    keys = sorted({layer_key(r) for r in rows})
    if layer is None:
        key = keys[-1]
    else:
        if isinstance(layer, bool) or not isinstance(layer, numbers.Integral):
            raise ValueError(f"layer: expected an integer layer index (-1 = last) or None, got {layer!r}.")
        last = cmp.cards.get("a", {}).get("checkpoint", {}).get("num_layers", keys[-1][0])
        lay = int(layer) + int(last) + 1 if layer < 0 else int(layer)
        match = [k for k in keys if k[0] == lay]
        if not match:
            raise ValueError(f"layer: expected one of {[k[0] for k in keys]} (compared for {task!r}), got {layer!r}.")
        key = match[0]
    rows = [r for r in rows if layer_key(r) == key]
    standardised = any(is_finite(r.get("stderr")) and r["stderr"] > 0 for r in rows)
    panels: dict[str, list[Mapping[str, Any]]] = {}
    for r in rows:
        if not is_finite(r.get("diff")):
            continue
        if (standardised and is_finite(r.get("stderr")) and r["stderr"] > 0) or (
                not standardised and is_finite(r.get("value_a")) and r["value_a"] != 0):
            panels.setdefault(pooling_key(r), []).append(r)
    if not panels:
        raise NothingToDraw(f"no difference of {task} at {layer_key_text(key)} has a finite, non-zero standard "
                            "error (identical embeddings, or undefined metrics).")
    label = comparison_label(cmp)
    ci = ci_label([cmp])
    if ax is None:
        fig, axes = _grid(len(panels), (5.0, 0.26 * max(len(v) for v in panels.values()) + 1.6), cols=2)
        for a, (p, prow) in zip(axes, panels.items(), strict=True):
            pair = comparison_poolings(cmp)  # a comparison of two poolings names them in its label
            where = "" if pair and p == f"{pair[1]} − {pair[0]}" else f"{p}, "
            _draw_differences(a, prow, f"{task}: {label}, {where}{layer_key_text(key)}", cmp, ci, standardised)
        return fig
    merged = [dict(r, name=f"{p}: {r['name']}") if len(panels) > 1 else r for p, pr in panels.items() for r in pr]
    _draw_differences(ax, merged, f"{task}: {label}, {', '.join(panels)}, {layer_key_text(key)}", cmp, ci,
                      standardised)
    return ax.figure


def _draw_differences(ax: Any, rows: Sequence[Mapping[str, Any]], title: str, cmp: ComparisonResult,
                      ci: str, standardised: bool) -> None:
    y = np.arange(len(rows))
    for yi, r in zip(y, rows, strict=True):
        if not standardised:  # reference protocol: point values only, drawn relative to a's value
            ax.plot([float(r["diff"]) / abs(float(r["value_a"]))], [yi], marker="D", color=_colour(0), ls="none")
            continue
        se = float(r["stderr"])
        z = float(r["diff"]) / se
        lo = float(r["low"]) / se if is_finite(r.get("low")) else z - Z95
        hi = float(r["high"]) / se if is_finite(r.get("high")) else z + Z95
        sig = bool(r.get("significant"))
        colour = _colour(3 if sig else 0)
        ax.errorbar([z], [yi], xerr=[[z - lo], [hi - z]], marker="o", color=colour, mfc=colour if sig else "white",
                    capsize=2, lw=1, ls="none")
    ax.axvline(0, color="0.5", lw=0.8)
    ax.set_yticks(y, [str(r["name"]) for r in rows], fontsize=7)
    ax.invert_yaxis()
    what = "diff / s.e." if standardised else "diff / |a|"
    if cmp.options.get("kind") == "poolings":
        ax.set_xlabel(f"{what}, diff = second − first pooling", fontsize=8)
    else:
        ax.set_xlabel(f"{what}, diff = b − a (second minus first)\na = {cmp.a}, b = {cmp.b}", fontsize=8)
    note = f"filled = {ci} excludes 0" if standardised else "point values, no intervals (reference protocol)"
    _title(ax, f"{title}\n{note}", 8, 56)
    ax.grid(True, axis="x", alpha=0.3)
    _plain_ticks(ax, y=False)


# --- checkpoint trajectories -----------------------------------------------------------------------------------

def trajectory_figure(results: Sequence[AnalysisResult] | Mapping[str, Sequence[AnalysisResult]], task: str, *,
                      pooling: str | Sequence[str] | None = None, layer: int | None = None,
                      metric: str | Sequence[str] | None = None, ax: Any = None) -> Any:
    """Metrics against training step for the checkpoints of one or more trainer runs (grouped by
    ``checkpoint['trajectory']['run']``, sorted by step; or ``{run: [results]}``), runs overlaid, interval bands.
    ``metric=None``: every one of :data:`TRAJECTORY_METRICS` present, a panel each; ``pooling=None``: every
    pooling, a row each; ``layer=None``: each checkpoint's last measured layer. When every checkpoint records
    the tokens seen and tokens grow in proportion to steps, a top axis reads tokens."""
    runs = runs_of(results)
    flat = [r for seq in runs.values() for r in seq]
    check_task(flat, task)
    pools = select_poolings(flat, task, pooling)
    check_layer(flat, task, layer, pools)
    mets = _metric_list(flat, task, metric, TRAJECTORY_METRICS)

    def series(seq: list[AnalysisResult], p: str, m: str) -> list[tuple[int, int | None, dict]]:
        out = []
        for k, res in enumerate(seq):
            row = metric_row(res, task, p, resolve_layer(res, task, layer, p), m)
            if row is not None:
                out.append((*step_of(res, k), row))
        return out

    if ax is not None:
        if len(mets) != 1:
            raise ValueError(f"metric: one Axes draws one metric; got {mets}. Pass metric='{mets[0]}' or omit ax=.")
        panels = [(p, mets[0]) for p in pools]
    else:
        panels = [(p, m) for p in pools for m in mets]
    drawn = {pm: {run: series(seq, *pm) for run, seq in runs.items()} for pm in panels}
    panels = [pm for pm in panels if any(drawn[pm].values())]
    if not panels:
        raise NothingToDraw(f"no {', '.join(mets)} for {task} ({', '.join(pools)}) at any checkpoint.")
    ratios = [tok / st for d in drawn.values() for s in d.values() for st, tok, _ in s if tok and st > 0]
    steps_only = [st for d in drawn.values() for s in d.values() for st, tok, _ in s if tok is None]
    per_step = ratios[0] if ratios and not steps_only and max(ratios) - min(ratios) <= 1e-6 * max(ratios) else None
    if ax is not None:
        fig = ax.figure
        axes = [ax]
    else:
        rows_p = list(dict.fromkeys(p for p, _ in panels))
        cols = max(sum(1 for q, _ in panels if q == p) for p in rows_p)
        plt = pyplot()
        fig, grid = plt.subplots(len(rows_p), cols, figsize=(3.6 * cols + 1.6, 3.0 * len(rows_p)),
                                 layout="constrained", squeeze=False)
        axes = []
        for r_i, p in enumerate(rows_p):
            ms = [pm for pm in panels if pm[0] == p]
            for c_i in range(cols):
                if c_i < len(ms):
                    axes.append(grid[r_i][c_i])
                else:
                    fig.delaxes(grid[r_i][c_i])
    run_names = list(runs)
    for a, (p, m) in zip(axes if ax is None else axes * len(panels), panels, strict=True):
        j = pools.index(p)
        for r_i, run in enumerate(run_names):
            s = drawn[(p, m)][run]
            if not s:
                continue
            xs = np.array([st for st, _, _ in s])
            last_tokens = s[-1][1]
            obj = trajectory_of(runs[run][-1]) or {}
            label = run + (f" ({obj['objective']})" if obj.get("objective") not in (None, "", run) else "")
            if per_step is None and last_tokens:
                label += f", {last_tokens:,} tokens at step {s[-1][0]}"
            if ax is not None and len(pools) > 1:
                label += f", {p}"
            _band(a, xs, [row for _, _, row in s], _colour(r_i), LINESTYLES[j % 4] if ax is not None else "-",
                  MARKERS.get(p, "o"), label)
        a.set_xlabel("training step")
        a.set_ylabel(_label(m))
        shown = [p] if ax is None else list(dict.fromkeys(q for q, _ in panels))
        _title(a, f"{task}: {_label(m)}, {', '.join(shown)} pooling, {_layer_text(flat, task, layer, shown)}")
        a.grid(True, alpha=0.3)
        _plain_ticks(a, x=False)
        if per_step is not None and not any(getattr(c, "_embedgeom_tokens", False) for c in a.child_axes):
            sec = a.secondary_xaxis("top", functions=(lambda s, k=per_step: s * k, lambda t, k=per_step: t / k))
            sec._embedgeom_tokens = True
            sec.set_xlabel("tokens seen", fontsize=7)
            sec.tick_params(labelsize=6)
        if ax is not None:
            a.legend(fontsize=6, frameon=False)
    if ax is None:
        from matplotlib.lines import Line2D

        handles = []
        for r_i, run in enumerate(run_names):
            obj = trajectory_of(runs[run][-1]) or {}
            text = run + (f" ({obj['objective']})" if obj.get("objective") not in (None, "", run) else "")
            last = step_of(runs[run][-1], len(runs[run]) - 1)
            if per_step is None and last[1]:
                text += f"; {last[1]:,} tokens at step {last[0]}"
            handles.append(Line2D([], [], color=_colour(r_i), marker="o", label=text))
        _legend_outside(fig, handles, "run")
    return fig


def has_data(fig: Any) -> bool:
    """Whether every Axes of ``fig`` (secondary axes aside) draws at least one line, collection or patch with
    data."""
    axes = [a for a in fig.axes if a.get_visible() and not _is_secondary(a)]
    return bool(axes) and all(_axes_has_data(a) for a in axes)


def _is_secondary(ax: Any) -> bool:
    return type(ax).__name__ == "SecondaryAxis"


def _axes_has_data(ax: Any) -> bool:
    for line in ax.lines:
        x, y = (np.asarray(v, dtype=float) for v in line.get_data())
        if x.size and np.isfinite(x).any() and np.isfinite(y).any():
            return True
    for coll in ax.collections:
        if any(len(p.vertices) for p in coll.get_paths()) or len(coll.get_offsets()):
            return True
    for patch in ax.patches:
        if type(patch).__name__ == "StepPatch":
            v, _ = patch.get_data()[:2]
            if np.isfinite(np.asarray(v, dtype=float)).any():
                return True
        elif type(patch).__name__ == "Rectangle" and math.isfinite(patch.get_height()) and patch.get_width() > 0:
            return True
    return False
