"""Matplotlib figures of analysis results (matplotlib imported lazily). This module only draws: what the results
hold and which row answers a request are asked of :mod:`embedgeom.queries`; report assembly lives in
:mod:`embedgeom.report`; :mod:`embedgeom.plot` is the public plotting API over these functions.

Every figure is driven by what the results contain: ``pooling=None`` draws every pooling present (as panels,
or as series on a given ``ax``), ``layer=None`` the last layer each result measured for the task (``-1`` the
model's last layer, another negative index counts from it, ``k >= 0`` hidden layer ``k``; 0 = embedding output).
Nothing defaults to one pooling or layer. A task, pooling, layer or metric the results do not hold raises one
``ValueError`` listing what is present; a figure whose data is absent (e.g. cosine histograms of a
reference-protocol result) raises :class:`NothingToDraw`, a ``ValueError`` whose message says why.

Layout: titles are one short line (task and what is drawn); legends sit outside the axes (right of them), never
over the data; every model's legend entry says which of its layers is drawn and on how many texts, e.g.
``tiny: layer 2 of 2, n = 42``. Layers of models of different depth are matched as asked and the label says
how (:func:`layer_phrase`): ``layer=-1``/``None`` is each model's own last layer ("last layer (2 of 2; 6 of 6)"),
``layer=k >= 0`` is index ``k`` in every model ("layer 2 by index (2 of 2; 2 of 6)"); layer profiles take
``layer_match="index"`` or ``"depth"`` (layer / last layer). Drawing results measured on different numbers of
texts n or in different dimensions d warns with :class:`IncomparableResultsWarning`, saying what is and is not
comparable (:func:`comparability_note`).

Conventions: spectra are compared by *shape* (lambda / sum lambda on log-log axes: raw eigenvalues mix a
model's overall scale into its shape); every point estimate is drawn with its interval (reference-protocol rows
carry none, and their labels say so), labelled with the confidence level the results recorded (e.g. "90% CI";
probe scores, which carry a standard error only, are drawn and labelled as ±1.96 s.e.); probe bars carry a dashed
chance line where the probe row records its ``chance`` level; cosine histograms are drawn on the range their
counts occupy (:func:`cosine_histogram_range`); differences are drawn in each metric's own units, a panel per
metric naming its better direction. Models are told apart by colour (Okabe-Ito, colour-blind safe) and poolings
by marker and line style, named in legends rather than text labels next to points, so labels never overlap.
Every function returns a ``Figure``; ``ax=`` draws into an existing Axes instead.
"""

from __future__ import annotations

import itertools
import math
import numbers
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np

from .queries import (
    Z95,
    IncomparableWarning,
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
    num_layers,
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
from .results import AnalysisResult, ComparisonResult, array_key

OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")
MARKERS = {"mean": "o", "cls": "s", "max": "^", "attention": "D", "native": "P", "paper_attention": "v",
           "weighted": "X"}
LINESTYLES = ("-", "--", ":", "-.")
#: Metrics a layer profile draws when none is named (those present).
LAYER_PROFILE_METRICS: tuple[str, ...] = ("effective_rank", "uniformity", "alignment", "rankme", "isoscore",
                                          "mean_cosine")
#: Metrics a checkpoint trajectory draws when none is named (those present).
TRAJECTORY_METRICS: tuple[str, ...] = ("uniformity", "alignment", "effective_rank", "rankme", "isoscore")
#: How a layer profile places models of different depth: by layer index, or by relative depth (layer / last).
LAYER_MATCHES: tuple[str, ...] = ("index", "depth")
#: What differs when results measured on different n or d are drawn together (stated by the warning).
INCOMPARABLE_NOTE = ("ranks (effective rank, RankMe, stable rank, participation ratio, rank at variance), spectral "
                     "entropy and IsoScore scale with n and d, and alpha-ReQ fits a rank window that depends on "
                     "them, so these are not comparable across the results; uniformity, alignment and mean cosine "
                     "are means over pairs and stay comparable (their intervals widen as n shrinks); eigenspectra "
                     "compare in shape only over the shorter spectrum; probe scores depend on n through their "
                     "training folds")


class NothingToDraw(ValueError):
    """The results hold nothing this figure can draw; the message says why (one line)."""


#: Results drawn (or tabulated) together measured on different n or d (the same class as
#: ``embedgeom.comparison.IncomparableWarning``); the message says which numbers are comparable
#: (:data:`INCOMPARABLE_NOTE`).
IncomparableResultsWarning = IncomparableWarning


# --- matplotlib -------------------------------------------------------------------------------------------

def pyplot() -> Any:
    """``matplotlib.pyplot``, with the non-interactive Agg backend selected unless Python runs interactively."""
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


def _title(ax: Any, text: str, size: float = 9) -> None:
    """A one-line title (whitespace and line breaks collapsed), its font shrunk (to 6 pt at least) when it would
    be wider than the axes; details belong in legends, axis labels and the report's captions."""
    text = " ".join(str(text).split())
    pos = ax.get_position()
    fits = pos.width * ax.figure.get_figwidth() * 72 / (0.56 * size)
    if len(text) > fits:
        size = max(6.0, size * fits / len(text))
    ax.set_title(text, fontsize=size)


def _label(metric: str) -> str:
    return metric.replace("_", " ")


def _legend(fig: Any, ax: Any, handles: list[Any], title: str | None, *, own: bool,
            loc: str = "outside right upper") -> None:
    """A legend outside the data: beside the figure's panels (``own``: a figure this module made, laid out by
    constrained layout) or right of ``ax`` (a caller's Axes)."""
    if not handles:
        return
    kw = {"handles": handles, "title": title, "fontsize": 7, "title_fontsize": 7, "frameon": False,
          "alignment": "left"}
    if own:
        fig.legend(loc=loc, **kw)
    else:
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, **kw)


def _legend_beside(ax: Any, title: str | None = None) -> None:
    """The Axes' own labelled artists in a legend right of it (outside the data area)."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, fontsize=6,
                  title=title, title_fontsize=6, frameon=False, alignment="left")


# --- what is drawn: layers, n and d ---------------------------------------------------------------------------

def _drawn_layers(results: Sequence[AnalysisResult], task: str, layer: int | None, pools: Sequence[str]
                  ) -> list[tuple[AnalysisResult, int, int]]:
    """(result, layer drawn, its last layer) for each result with a measured layer to draw."""
    out = []
    for r in results:
        lays = sorted({resolve_layer(r, task, layer, p) for p in pools} - {None})
        if lays:
            out.append((r, int(lays[-1]), num_layers(r)))
    return out


def _phrase(pairs: Sequence[tuple[int, int]], layer: int | None) -> str:
    uniq = list(dict.fromkeys(pairs))
    if not uniq:
        return "no layer"
    if len(uniq) == 1:
        lay, last = uniq[0]
        return f"last layer ({lay} of {last})" if lay == last else f"layer {lay} of {last}"
    inner = "; ".join(f"{lay} of {last}" for lay, last in uniq)
    if all(lay == last for lay, last in uniq):
        return f"last layer ({inner})"
    if layer is None:
        return f"last measured layer ({inner})"
    if layer < 0:
        return f"layer {layer} from each model's end ({inner})"
    return f"layer {layer} by index ({inner})"


def layer_phrase(results: Sequence[AnalysisResult] | AnalysisResult, task: str, layer: int | None = None,
                 pooling: str | Sequence[str] | None = None) -> str:
    """How the layers drawn for ``task`` are matched, e.g. 'layer 1 of 2', 'last layer (2 of 2; 6 of 6)' (each
    model's own last layer), 'layer 2 by index (2 of 2; 2 of 6)' (the same index in models of different depth),
    'layer -2 from each model's end (0 of 2; 4 of 6)'; ``layer`` and ``pooling`` as the figures take them."""
    results = as_results(results)
    pools = select_poolings(results, task, pooling)
    return _phrase([(lay, last) for _, lay, last in _drawn_layers(results, task, layer, pools)], layer)


def sample_size(result: AnalysisResult, task: str) -> int | None:
    """The number of texts ``result`` embedded for ``task`` (its task card's ``n_items``), else the largest ``n``
    of its rows for the task; None when unknown."""
    card = result.tasks.get(task) or {}
    for key in ("n_items", "n_texts"):
        if is_finite(card.get(key)):
            return int(card[key])
    ns = [int(r["n"]) for r in result.metrics if r["task"] == task and is_finite(r.get("n"))]
    return max(ns) if ns else None


def dimension(result: AnalysisResult) -> int | None:
    """The embedding dimension d of ``result`` (its checkpoint's ``hidden_size``), else None."""
    d = result.checkpoint.get("hidden_size") if isinstance(result.checkpoint, Mapping) else None
    if is_finite(d) and int(d) > 0:
        return int(d)
    for k, v in result.arrays.items():
        if k.startswith("emb|") and np.ndim(v) == 2:
            return int(np.shape(v)[1])
    return None


def comparability_note(results: Sequence[AnalysisResult] | AnalysisResult, task: str) -> str | None:
    """One line naming each result's n (texts of ``task``) and d when the results differ in either, and what is
    and is not comparable across them (:data:`INCOMPARABLE_NOTE`); None when they agree (or there is one)."""
    results = as_results(results)
    ns = {r.name: sample_size(r, task) for r in results if task in tasks_of([r])}
    ds = {r.name: dimension(r) for r in results if task in tasks_of([r])}
    parts = []
    if len(set(ns.values()) - {None}) > 1:
        parts.append("n (" + ", ".join(f"{k}: {v:,}" if v is not None else f"{k}: ?" for k, v in ns.items()) + ")")
    if len(set(ds.values()) - {None}) > 1:
        parts.append("d (" + ", ".join(f"{k}: {v}" if v is not None else f"{k}: ?" for k, v in ds.items()) + ")")
    if not parts:
        return None
    return f"{task}: results drawn together differ in {' and '.join(parts)}: {INCOMPARABLE_NOTE}."


def _warn_incomparable(results: Sequence[AnalysisResult], task: str) -> None:
    note = comparability_note(results, task) if len(results) > 1 else None
    if note:
        warnings.warn(note, IncomparableResultsWarning, stacklevel=3)


def _model_label(res: AnalysisResult, task: str, lay: int | None, last: int | None = None) -> str:
    n = sample_size(res, task)
    bits = []
    if lay is not None:
        bits.append(f"layer {lay} of {num_layers(res) if last is None else last}")
    if n is not None:
        bits.append(f"n = {n:,}")
    return f"{res.name}: {', '.join(bits)}" if bits else res.name


def _model_handles(results: Sequence[AnalysisResult], task: str, layer: int | None, pools: Sequence[str],
                   marker: str = "o", ls: str = "none") -> list[Any]:
    from matplotlib.lines import Line2D

    lays = {id(r): lay for r, lay, _ in _drawn_layers(results, task, layer, pools)}
    return [Line2D([], [], color=_colour(i), marker=marker, ls=ls, label=_model_label(r, task, lays.get(id(r))))
            for i, r in enumerate(results)]


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


def _pooling_handles(poolings: Sequence[str], *, lines: bool = False) -> list[Any]:
    from matplotlib.lines import Line2D

    return [Line2D([], [], color="0.3", marker=MARKERS.get(p, "o"), ls=LINESTYLES[j % 4] if lines else "none",
                   label=f"{p} pooling") for j, p in enumerate(poolings)]


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
                            f"{layer_phrase(results, task, layer, pools)}).")
    _warn_incomparable([r for r in results if any(spectrum_of(r, task, p, layer) is not None for p in panels)],
                       task)
    if ax is None:
        fig, axes = _grid(len(panels), (6.0, 3.6), cols=2)
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
            lay = resolve_layer(res, task, layer, pooling)
            label = _model_label(res, task, lay) + ("" if len(pools) == 1 else f", {pooling}")
            ax.loglog(k, p, color=_colour(i), lw=1.6, ls=LINESTYLES[j % 4], label=label)
            if fit:
                _draw_fit(ax, res, task, pooling, lay, full, _colour(i))
    ax.set_xlabel("rank k")
    ax.set_ylabel("λ_k / Σλ  (fraction of variance)")
    what = f"{pools[0]} pooling" if len(pools) == 1 else ", ".join(pools)
    _title(ax, f"{task}: eigenspectrum, {what}")
    ax.grid(True, which="major", alpha=0.3)
    _legend_beside(ax, layer_phrase(results, task, layer, pools))


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
                            f"{layer_phrase(results, task, layer, pools)}).")
    _warn_incomparable([results[i] for i in dict.fromkeys(i for i, _, _, _ in points)], task)
    fig, ax = _axes(ax, (7.4, 4.2))
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
    handles = _model_handles(results, task, layer, list(drawn_pools)) + traj_handles
    handles += _pooling_handles(list(drawn_pools))
    missing = [results[i].name for i in dict.fromkeys(i for i, _, _, a in points if a is None)
               if paired and not any(j == i for j, _, _, _ in paired)]
    if missing:  # e.g. a reference-protocol result next to default ones: its "alignment" is another quantity
        from matplotlib.lines import Line2D

        handles.append(Line2D([], [], ls="none", label=f"not drawn, no {ymetric}: {', '.join(missing)}"))
    ci = _ci_note(results)
    _legend(fig, ax, handles, f"{layer_phrase(results, task, layer, list(drawn_pools))}\nwhiskers: {ci}", own=own)
    ax.set_xlabel("uniformity  (log E exp(-2‖z-z'‖²); lower = more uniform)")
    if not paired:
        _title(ax, f"{task}: uniformity (no pairs, no alignment)")
        ax.grid(True, axis="x", alpha=0.3)
        _plain_ticks(ax, y=False)
        return fig
    if ymetric == "alignment":
        ax.set_ylabel("alignment  (E‖z-z⁺‖²; lower = closer positives)")
    else:
        ax.set_ylabel("class-conditional alignment (reference definition;\nnot Wang & Isola's alignment)")
    _title(ax, f"{task}: {_label(ymetric or '')} vs uniformity")
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
        raise NothingToDraw(f"{metric} is not defined for {task} at {layer_phrase(results, task, layer)}.")
    _warn_incomparable([r for i, r in enumerate(results) if any(cells[(i, p)] for p in pools)], task)
    own = ax is None
    fig, ax = _axes(ax, (max(4.6, 1.3 * len(pools) + 2.4) + 2.6, 3.6))
    width = 0.8 / len(results)
    for i, _res in enumerate(results):
        rows = [cells[(i, p)] for p in pools]
        vals = [np.nan if r is None else r["value"] for r in rows]
        errs = [0.0 if r is None else half_width(r) for r in rows]
        x = np.arange(len(pools)) + (i - (len(results) - 1) / 2) * width
        ax.bar(x, vals, width * 0.92, yerr=errs, color=_colour(i), capsize=2)
    ax.set_xticks(np.arange(len(pools)), pools)
    ax.set_xlabel("pooling")
    ax.set_ylabel(_label(metric))
    ci = _ci_note(results)
    _legend(fig, ax, _model_handles(results, task, layer, pools, marker="s"),
            f"{layer_phrase(results, task, layer, pools)}\nwhiskers: {ci}", own=own)
    _title(ax, f"{task}: {_label(metric)} by pooling")
    ax.grid(True, axis="y", alpha=0.3)
    _plain_ticks(ax, x=False)
    return fig


# --- probes -------------------------------------------------------------------------------------------------

def probe_figure(results: Sequence[AnalysisResult] | AnalysisResult, *, task: str | Sequence[str] | None = None,
                 pooling: str | Sequence[str] | None = None, layer: int | None = None, ax: Any = None) -> Any:
    """Each task's headline probe score (:func:`embedgeom.queries.main_probe`: accuracy for classification, Spearman for
    similarity, ...) per pooling, one bar per model, +-1.96 standard errors, and a dashed line at the probe's
    chance level over each bar where its row records one (``chance``; rows without it get no line).
    ``task=None``: every task with probe scores; ``pooling=None``: every pooling; ``layer=None``: the last layer
    each model probed."""
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
    drawn_tasks = list(dict.fromkeys(t for t, _, _ in cats))
    for t in drawn_tasks:
        _warn_incomparable([r for r in results if any(probe_row(r, t, p, resolve_layer(r, t, layer, p), pm)
                                                      for tt, p, pm in cats if tt == t)], t)
    own = ax is None
    fig, ax = _axes(ax, (max(5.0, 0.55 * len(cats) * max(1, len(results)) + 2.0) + 2.6, 3.8))
    width = 0.8 / len(results)
    chance_drawn = False
    for i, res in enumerate(results):
        rows = [probe_row(res, t, p, resolve_layer(res, t, layer, p), pm) for t, p, pm in cats]
        vals = [np.nan if r is None else r["value"] for r in rows]
        errs = [Z95 * r["stderr"] if r is not None and is_finite(r.get("stderr")) else 0.0 for r in rows]
        x = np.arange(len(cats)) + (i - (len(results) - 1) / 2) * width
        ax.bar(x, vals, width * 0.92, yerr=errs, color=_colour(i), capsize=2)
        for xi, r in zip(x, rows, strict=True):
            if r is not None and is_finite(r.get("chance")):  # never invented: only where the row records it
                ax.plot([xi - width / 2, xi + width / 2], [float(r["chance"])] * 2, color="0.15", ls="--", lw=1.2,
                        gid="chance", label="_chance" if chance_drawn else "chance")
                chance_drawn = True
    ax.set_xticks(np.arange(len(cats)), [f"{t}\n{p}\n{pm[0]} {_label(pm[1])}" for t, p, pm in cats], fontsize=7)
    ax.set_ylabel("probe score")
    ci = _ci_note(results, "±1.96 s.e.")
    if len(drawn_tasks) == 1:
        handles = _model_handles(results, drawn_tasks[0], layer, [cats[0][1]], marker="s")
    else:  # n and layers differ by task: the names alone
        from matplotlib.lines import Line2D

        handles = [Line2D([], [], color=_colour(i), marker="s", ls="none", label=r.name) for i, r in enumerate(results)]
    if chance_drawn:
        from matplotlib.lines import Line2D

        handles.append(Line2D([], [], color="0.15", ls="--", lw=1.2, label="chance"))
    layers = layer_phrase(results, drawn_tasks[0], layer, [cats[0][1]]) if len(drawn_tasks) == 1 else (
        "last layer probed" if layer is None else f"layer {layer}")
    _legend(fig, ax, handles, f"{layers}\nwhiskers: {ci}", own=own)
    _title(ax, f"probes: {', '.join(drawn_tasks)}")
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
                         ax: Any = None, layer_match: Literal["index", "depth"] = "index") -> Any:
    """Metrics against hidden layer, one line per model with its interval band. ``layer_match="index"``: x = layer
    index (0 = embedding output; one tick per layer measured), so models of different depth meet at equal
    indices; ``"depth"``: x = relative depth, layer / the model's last layer (0 = embedding output, 1 = last
    layer), so each model's last layer meets the others'. The x label says which. ``metric=None``: every one of
    :data:`LAYER_PROFILE_METRICS` present, a panel each; ``pooling=None``: every pooling, a row of panels each. On
    a given ``ax`` (one metric) poolings are told apart by line style."""
    results = as_results(results)
    check_task(results, task)
    if layer_match not in LAYER_MATCHES:
        raise ValueError(f"layer_match: expected one of {LAYER_MATCHES} ('index': the same layer index; 'depth': "
                         f"layer / last layer), got {layer_match!r}.")
    pools = select_poolings(results, task, pooling)
    mets = _metric_list(results, task, metric, LAYER_PROFILE_METRICS)
    _warn_incomparable(results, task)
    if ax is not None:
        if len(mets) != 1:
            raise ValueError(f"metric: one Axes draws one metric; got {mets}. Pass metric='{mets[0]}' or omit ax=.")
        if not any(layer_series(r, task, p, mets[0]) for r in results for p in pools):
            raise NothingToDraw(f"{mets[0]} is not defined at any layer of {task} ({', '.join(pools)}).")
        _draw_profile(ax, results, task, pools, mets[0], layer_match)
        _legend_beside(ax, f"bands: {_ci_note(results)}")
        return ax.figure
    panels = [(p, m) for p in pools for m in mets if any(layer_series(r, task, p, m) for r in results)]
    if not panels:
        raise NothingToDraw(f"{', '.join(mets)} not defined at any layer of {task} ({', '.join(pools)}).")
    cols = max(sum(1 for q, _ in panels if q == p) for p in pools)
    rows_p = list(dict.fromkeys(p for p, _ in panels))
    plt = pyplot()
    fig, axes = plt.subplots(len(rows_p), cols, figsize=(3.6 * cols + 2.6, 2.9 * len(rows_p)), layout="constrained",
                             squeeze=False)
    for r_i, p in enumerate(rows_p):
        ms = [m for q, m in panels if q == p]
        for c_i in range(cols):
            a = axes[r_i][c_i]
            if c_i >= len(ms):
                fig.delaxes(a)
                continue
            _draw_profile(a, results, task, [p], ms[c_i], layer_match)
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=_colour(i), marker="o", label=_depth_label(r, task))
               for i, r in enumerate(results)]
    _legend(fig, None, handles, f"bands: {_ci_note(results)}", own=True)
    return fig


def _depth_label(res: AnalysisResult, task: str) -> str:
    n = sample_size(res, task)
    return f"{res.name}: {num_layers(res)} layers" + (f", n = {n:,}" if n is not None else "")


def _draw_profile(ax: Any, results: Sequence[AnalysisResult], task: str, pools: Sequence[str], metric: str,
                  layer_match: str) -> None:
    ticks: set[int] = set()
    for j, p in enumerate(pools):
        for i, res in enumerate(results):
            rows = layer_series(res, task, p, metric)
            if not rows:
                continue
            xs = np.array([int(r["layer"]) for r in rows])
            ticks.update(int(x) for x in xs)
            if layer_match == "depth":
                xs = xs / max(1, num_layers(res))
            label = _depth_label(res, task) + ("" if len(pools) == 1 else f", {p}")
            _band(ax, xs, rows, _colour(i), LINESTYLES[j % 4], MARKERS.get(p, "o"), label)
    if layer_match == "depth":
        ax.set_xlabel("relative depth (layer / last layer; 0 = embedding output)", fontsize=8)
        _plain_ticks(ax, y=False)
    else:
        ordered = sorted(ticks)
        step = max(1, math.ceil(len(ordered) / 14))
        ax.set_xticks(ordered[::step], [str(t) for t in ordered[::step]])
        depths = {num_layers(r) for r in results}
        ax.set_xlabel("layer index (0 = embedding output)" if len(depths) <= 1 else
                      "layer index, matched by index (0 = embedding output)", fontsize=8)
    ax.set_ylabel(_label(metric))
    what = f"{pools[0]} pooling" if len(pools) == 1 else ", ".join(pools)
    _title(ax, f"{task}: {_label(metric)}, {what}")
    ax.grid(True, alpha=0.3)
    _plain_ticks(ax, x=False)


# --- cosine histograms ------------------------------------------------------------------------------------------

def _hist_edges(res: AnalysisResult, task: str, pooling: str, layer: int | None, bins: int) -> np.ndarray:
    """Bin edges of a saved cosine histogram: a saved ``hist_edges`` array when present, else ``bins`` equal bins
    over the range the result recorded (``options['histogram']['range']``, default [-1, 1])."""
    lay = resolve_layer(res, task, layer, pooling)
    edges = res.arrays.get(array_key("hist_edges", task, pooling, lay))
    if edges is not None and len(edges) == bins + 1:
        return np.asarray(edges, dtype=float)
    rng = (res.options.get("histogram") or {}).get("range")
    rng = rng if isinstance(rng, (list, tuple)) and len(rng) == 2 else (-1.0, 1.0)  # results before saved edges
    return np.linspace(float(rng[0]), float(rng[1]), bins + 1)


def cosine_histogram_range(results: Sequence[AnalysisResult] | AnalysisResult, task: str,
                           pooling: str | Sequence[str] | None = None, *, layer: int | None = None) -> dict[str, Any]:
    """The x range a cosine histogram is drawn on: the bins the saved counts occupy (first to last non-empty bin
    of any drawn series) widened by one bin on each side, within the stored range. Returns ``low``, ``high``
    (drawn), ``bins``, ``stored`` (the stored range, e.g. (-1.0, 1.0)), ``width`` (one bin) and ``pairs`` (the
    sampled pairs the results recorded, or None)."""
    results = as_results(results)
    pools = select_poolings(results, task, pooling)
    lo, hi, width, stored, bins, pairs = math.inf, -math.inf, 0.0, None, None, set()
    for res in results:
        h = res.options.get("histogram") or {}
        for p in pools:
            counts = histogram_of(res, task, p, layer)
            if counts is None:
                continue
            edges = _hist_edges(res, task, p, layer, len(counts))
            nz = np.flatnonzero(counts > 0)
            w = float(np.max(np.diff(edges)))
            lo = min(lo, max(float(edges[0]), float(edges[nz[0]]) - w))
            hi = max(hi, min(float(edges[-1]), float(edges[nz[-1] + 1]) + w))
            width = max(width, w)
            stored = (float(edges[0]), float(edges[-1])) if stored is None else (
                min(stored[0], float(edges[0])), max(stored[1], float(edges[-1])))
            bins = len(counts) if bins is None else max(bins, len(counts))
            if is_finite(h.get("pairs")):
                pairs.add(int(h["pairs"]))
    if stored is None:
        raise NothingToDraw(f"no cosine histograms saved for {task} ({', '.join(pools)} pooling).")
    return {"low": lo, "high": hi, "bins": bins, "stored": stored, "width": width,
            "pairs": max(pairs) if pairs else None}


def cosine_histogram_figure(results: Sequence[AnalysisResult] | AnalysisResult, task: str,
                            pooling: str | Sequence[str] | None = None, *, layer: int | None = None,
                            ax: Any = None) -> Any:
    """Density of pairwise cosine similarities (sampled pairs), one step line per model; one panel per
    pooling (``pooling=None``: all present), or line styles per pooling on a given ``ax``. Each panel is drawn
    on the range its counts occupy, one bin of margin each side (:func:`cosine_histogram_range`), so an
    anisotropic model is not one spike at the edge of [-1, 1]; the x label states the drawn range and bins."""
    results = as_results(results)
    check_task(results, task)
    pools = select_poolings(results, task, pooling)
    check_layer(results, task, layer, pools)
    panels = [p for p in pools if any(histogram_of(r, task, p, layer) is not None for r in results)]
    if not panels:
        why = "; reference-protocol analyses save none" if _no_intervals(results) else ""
        raise NothingToDraw(f"no cosine histograms saved for {task} ({', '.join(pools)} pooling, "
                            f"{layer_phrase(results, task, layer, pools)}){why}.")
    drawn = [r for r in results if any(histogram_of(r, task, p, layer) is not None for p in panels)]
    _warn_incomparable(drawn, task)
    if ax is None:
        fig, axes = _grid(len(panels), (3.9, 3.2), cols=3)
        for a, p in zip(axes, panels, strict=True):
            _draw_histograms(a, results, task, [p], layer)
        _legend(fig, None, _model_handles(drawn, task, layer, panels, ls="-", marker=""),
                layer_phrase(drawn, task, layer, panels), own=True)
        return fig
    _draw_histograms(ax, results, task, panels, layer)
    _legend_beside(ax, layer_phrase(drawn, task, layer, panels))
    return ax.figure


def _draw_histograms(ax: Any, results: Sequence[AnalysisResult], task: str, pools: Sequence[str],
                     layer: int | None) -> None:
    for j, p in enumerate(pools):
        for i, res in enumerate(results):
            counts = histogram_of(res, task, p, layer)
            if counts is None:
                continue
            edges = _hist_edges(res, task, p, layer, len(counts))
            dens = counts / counts.sum() / np.diff(edges)
            ax.stairs(dens, edges, color=_colour(i), lw=1.6, ls=LINESTYLES[j % 4],
                      label=_model_label(res, task, resolve_layer(res, task, layer, p)) +
                      ("" if len(pools) == 1 else f", {p}"))
    span = cosine_histogram_range(results, task, pools, layer=layer)
    ax.set_xlim(span["low"], span["high"])
    ax.set_xlabel(f"cosine similarity of two texts\ndrawn on [{span['low']:.2f}, {span['high']:.2f}]; "
                  f"{span['bins']} bins over [{span['stored'][0]:g}, {span['stored'][1]:g}]", fontsize=7)
    ax.set_ylabel("density")
    what = f"{pools[0]} pooling" if len(pools) == 1 else ", ".join(pools)
    _title(ax, f"{task}: pairwise cosines, {what}")
    ax.grid(True, alpha=0.3)


# --- comparisons -------------------------------------------------------------------------------------------------

def better_direction(name: str, kind: str = "metric") -> bool | None:
    """Whether higher values of a difference row's quantity are better (True), lower (False), or neither is
    (None), as :func:`embedgeom.comparison.better_side` decides it (metrics: the registry's
    ``higher_is_better``; task probes: higher scores)."""
    from .comparison import better_side

    side = better_side({"name": name, "kind": kind, "diff": 1.0, "significant": True})
    return None if side is None else side == "b"


def _direction_text(higher: bool | None) -> str:
    return "no better direction" if higher is None else ("higher is better" if higher else "lower is better")


def difference_figure(cmp: ComparisonResult, task: str, *, pooling: str | Sequence[str] | None = None,
                      layer: int | None = None, metric: str | Sequence[str] | None = None, ax: Any = None) -> Any:
    """Paired differences b − a (second minus first) in each quantity's own units, with their intervals: a
    panel per metric and probe (``metric``: one name or several; ``None``: every one compared), one row per
    pooling, a line at 0, the title naming the better direction (:func:`better_direction`). A row whose interval
    excludes 0 is filled, coloured by the side it favours ("b better" / "a better"; black where the quantity
    has no better direction); reference-protocol rows carry no interval and are drawn as points. ``layer=None``:
    the deepest compared (negative counts from the first model's last layer); ``pooling``: a pooling name (either
    side of a pooling comparison) or a panel label. On a given ``ax`` one metric is drawn."""
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
    names = list(dict.fromkeys(str(r["name"]) for r in rows))
    if metric is not None:
        wanted_m = [metric] if isinstance(metric, str) else list(metric)
        bad = [m for m in wanted_m if m not in names]
        if bad or not wanted_m:
            raise ValueError(f"metric: expected one or more of {names} (compared for {task!r} at "
                             f"{layer_key_text(key)}), got {metric!r}.")
        names = list(dict.fromkeys(wanted_m))
    finite = [r for r in rows if str(r["name"]) in names and is_finite(r.get("diff"))]
    names = [n for n in names if any(str(r["name"]) == n for r in finite)]
    if not finite:
        raise NothingToDraw(f"no difference of {task} at {layer_key_text(key)} is finite (undefined metrics).")
    if ax is not None and len(names) != 1:
        raise ValueError(f"metric: one Axes draws one metric or probe; got {names}. Pass metric='{names[0]}' or "
                         "omit ax=.")
    pools = list(dict.fromkeys(pooling_key(r) for r in finite))
    pair = comparison_poolings(cmp)
    sides = (f"second ({pair[1]})", f"first ({pair[0]})") if pair else (f"b ({cmp.b})", f"a ({cmp.a})")
    sign = "second − first" if pair else "b − a"
    ci = ci_label([cmp])
    intervals = any(is_finite(r.get("low")) and is_finite(r.get("high")) for r in finite)
    own = ax is None
    if own:
        fig, axes = _grid(len(names), (3.4, 0.3 * len(pools) + 1.2), cols=3)
    else:
        fig, axes = ax.figure, [ax]
    for a, name in zip(axes, names, strict=True):
        _draw_difference_panel(a, [r for r in finite if str(r["name"]) == name], pools, sign)
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=_colour(3), marker="o", ls="none", label=f"{sides[0]} better"),
               Line2D([], [], color=_colour(0), marker="o", ls="none", label=f"{sides[1]} better"),
               Line2D([], [], color="black", marker="o", ls="none", label="differs; no better direction"),
               Line2D([], [], color="0.45", marker="o", mfc="white", ls="none",
                      label=_hollow_label(cmp, ci) if intervals else "no interval (reference protocol)")]
    n = _paired_n(finite)
    head = f"{comparison_label(cmp)}, {task}, {layer_key_text(key)}" + (f", n = {n:,}" if n else "")
    note = (f"diff = {sign} in each quantity's units; whiskers: {ci}" if intervals
            else f"diff = {sign}; point values, no intervals (reference protocol)")
    _legend(fig, axes[0], handles, f"{head}\n{note}", own=own)
    return fig


def _hollow_label(cmp: ComparisonResult, ci: str) -> str:
    """What a hollow marker means: the interval includes 0, or (under a multiple-comparison correction recorded
    in ``options['correction']``) the adjusted p-value is not below 1 - confidence."""
    corr = str(cmp.options.get("correction") or "none")
    return f"{ci} includes 0" if corr == "none" else f"not significant after the {corr} correction"


def _paired_n(rows: Sequence[Mapping[str, Any]]) -> int | None:
    """The number of texts the differences are paired on (the most common n of the metric rows, alignment's
    positive pairs aside)."""
    ns = [int(r["n"]) for r in rows if r.get("kind", "metric") == "metric" and r.get("name") != "alignment"
          and is_finite(r.get("n"))]
    return max(set(ns), key=ns.count) if ns else None


def _draw_difference_panel(ax: Any, rows: Sequence[Mapping[str, Any]], pools: Sequence[str], sign: str) -> None:
    name, kind = str(rows[0]["name"]), str(rows[0].get("kind", "metric"))
    higher = better_direction(name, kind)
    drawn = []
    for r in rows:
        y = pools.index(pooling_key(r))
        d = float(r["diff"])
        sig = bool(r.get("significant")) and is_finite(r.get("low"))
        colour = "0.45" if not sig else ("black" if higher is None else _colour(3 if (d > 0) == higher else 0))
        if is_finite(r.get("low")) and is_finite(r.get("high")):
            ax.errorbar([d], [y], xerr=[[d - float(r["low"])], [float(r["high"]) - d]], marker="o", color=colour,
                        mfc=colour if sig else "white", capsize=2, lw=1, ls="none")
        else:
            ax.plot([d], [y], marker="D", color=colour, mfc="white", ls="none")
        drawn.append(y)
    ax.axvline(0, color="0.5", lw=0.8)
    ax.set_yticks(range(len(pools)), list(pools), fontsize=7)
    ax.set_ylim(len(pools) - 0.5, -0.5)
    ax.set_xlabel(f"{sign}, in {_label(name)}" if kind == "metric" else f"{sign}, probe score", fontsize=7)
    ax.tick_params(axis="x", labelsize=7)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(nbins=4))
    _title(ax, f"{_label(name)} ({_direction_text(higher)})", 8)
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
    _warn_incomparable(flat, task)

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
        fig, grid = plt.subplots(len(rows_p), cols, figsize=(3.6 * cols + 3.0, 3.0 * len(rows_p)),
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
        _title(a, f"{task}: {_label(m)}, {', '.join(shown)} pooling")
        a.grid(True, alpha=0.3)
        _plain_ticks(a, x=False)
        if per_step is not None and not any(getattr(c, "_embedgeom_tokens", False) for c in a.child_axes):
            sec = a.secondary_xaxis("top", functions=(lambda s, k=per_step: s * k, lambda t, k=per_step: t / k))
            sec._embedgeom_tokens = True
            sec.set_xlabel("tokens seen", fontsize=7)
            sec.tick_params(labelsize=6)
        if ax is not None:
            _legend_beside(a, f"{layer_phrase(flat, task, layer, shown)}; bands: {_ci_note(flat)}")
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
        ns = sorted({n for n in (sample_size(r, task) for r in flat) if n is not None})
        n_text = f", n = {', '.join(f'{n:,}' for n in ns)}" if ns else ""
        _legend(fig, None, handles, f"run ({layer_phrase(flat, task, layer, pools)}{n_text})\nbands: "
                f"{_ci_note(flat)}", own=True)
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
