"""Figures and the report of token-level geometry (:mod:`embedgeom.token_results`); figures only draw, from the
results' tidy rows.

* :func:`layer_curves`: per layer, self-similarity (raw and adjusted), intra-similarity, anisotropy and MEV, one
  line per model with its interval band;
* :func:`rogue_bars`: the dimensions with the largest share of the expected cosine at one layer;
* :func:`postprocess_effect`: a metric per layer before and after the post-processing a result was measured with;
* :func:`build_token_report`: every figure for every task, the tables beside them and the paired comparisons, as
  ``index.md`` in a report directory written whole or not at all.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .storage import REPORT_FORMAT, safe_name, unique_name, write_manifest, write_output

#: The panels of :func:`layer_curves`, in order.
CURVE_METRICS = ("self_similarity", "adjusted_self_similarity", "intra_similarity", "anisotropy", "mev")
_LABELS = {"self_similarity": "self-similarity", "adjusted_self_similarity": "self-similarity − anisotropy",
           "intra_similarity": "intra-similarity", "anisotropy": "anisotropy (mean cosine)", "mev": "MEV",
           "adjusted_intra_similarity": "intra-similarity − anisotropy", "adjusted_mev": "MEV − anisotropy",
           "rogue_share": "rogue share", "token_uniformity": "token uniformity",
           "token_effective_rank": "token effective rank", "token_norm": "token norm"}
#: Columns of the report's per-layer table.
TABLE_METRICS = ("self_similarity", "adjusted_self_similarity", "intra_similarity", "mev", "anisotropy",
                 "rogue_share", "token_uniformity", "token_effective_rank", "token_norm")


def _as_list(results: Any) -> list:
    return list(results) if isinstance(results, (list, tuple)) else [results]


def _check_task(results: list, task: str) -> None:
    held = sorted({t for r in results for t in r.tasks})
    if not any(task in r.tasks for r in results):
        raise ValueError(f"task: expected one of {held}, got {task!r}.")


def _series(res: Any, task: str, metric: str, postprocess: str) -> tuple[np.ndarray, ...]:
    rows = sorted((r for r in res.metrics if (r["task"], r["metric"], r["postprocess"]) == (task, metric,
                                                                                            postprocess)),
                  key=lambda r: int(r["layer"]))
    def get(k: str) -> np.ndarray:
        return np.array([float(r.get(k, math.nan)) for r in rows])

    return np.array([int(r["layer"]) for r in rows]), get("value"), get("low"), get("high")


def layer_curves(results: Any, task: str, *, postprocess: str = "none", metrics: Sequence[str] = CURVE_METRICS
                 ) -> Any:
    """One panel per metric (default: self-similarity raw and adjusted, intra-similarity, anisotropy, MEV), x =
    layer (0 = embeddings), one line per model with its interval as a band."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    results = _as_list(results)
    _check_task(results, task)
    fig = Figure(figsize=(3.2 * len(metrics), 3.4), layout="constrained")
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    for ax, metric in zip(axes, metrics, strict=True):
        for res in results:
            layers, v, lo, hi = _series(res, task, metric, postprocess)
            if layers.size == 0:
                continue
            (line,) = ax.plot(layers, v, marker="o", ms=3, label=res.name)
            ok = np.isfinite(lo) & np.isfinite(hi)
            ax.fill_between(layers[ok], lo[ok], hi[ok], color=line.get_color(), alpha=0.2, lw=0)
        ax.set_title(_LABELS.get(metric, metric), fontsize=10)
        ax.set_xlabel("layer")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if metric.startswith(("adjusted", "anisotropy")):
            ax.axhline(0.0, color="0.5", lw=0.8)
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 4), frameon=False)
    pp = "" if postprocess == "none" else f", after {postprocess}"
    confs = sorted({f"{float(r.options.get('confidence', 0.95)) * 100:.4g}%" for r in results})
    fig.suptitle(f"{task}: token geometry by layer ({'/'.join(confs)} bands: jackknife over texts{pp})", fontsize=11)
    return fig


def rogue_bars(result: Any, task: str, *, layer: int | None = None, postprocess: str = "none", top: int = 10
               ) -> Any:
    """The ``top`` dimensions with the largest share of the expected cosine between one-per-text token occurrences
    at ``layer`` (default: the last measured), as bars labelled by dimension index."""
    from matplotlib.figure import Figure

    from .results import array_key

    _check_task([result], task)
    layers = sorted({int(r["layer"]) for r in result.metrics if r["task"] == task})
    layer = layers[-1] if layer is None else layer
    key = array_key("rogue", task, layer, postprocess)
    if key not in result.arrays:
        raise ValueError(f"layer: expected one of {layers} (postprocess {result.postprocessings()}), got {layer} "
                         f"with postprocess {postprocess!r}.")
    shares = np.asarray(result.arrays[key], dtype=np.float64)
    order = np.argsort(-shares, kind="stable")[:top]
    fig = Figure(figsize=(6.4, 3.4), layout="constrained")
    ax = fig.subplots()
    ax.bar(range(order.size), shares[order], color="tab:red")
    ax.set_xticks(range(order.size), [str(i) for i in order], fontsize=8)
    ax.set_xlabel("dimension")
    ax.set_ylabel("share of the expected cosine")
    ax.axhline(1.0 / shares.size, color="0.5", lw=0.8, ls="--", label=f"equal share (1/{shares.size})")
    ax.legend(frameon=False, fontsize=8)
    ax.set_title(f"{result.name} · {task} · layer {layer}: rogue dimensions"
                 + ("" if postprocess == "none" else f" (after {postprocess})"), fontsize=10)
    return fig


def postprocess_effect(result: Any, task: str, metric: str = "anisotropy") -> Any:
    """``metric`` per layer before (``none``) and after the result's post-processing."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    _check_task([result], task)
    variants = result.postprocessings()
    if len(variants) < 2:
        raise ValueError(f"result: expected a token result measured with a post-processing (--postprocess), got one "
                         f"with {variants} only.")
    fig = Figure(figsize=(4.8, 3.4), layout="constrained")
    ax = fig.subplots()
    for variant in variants:
        layers, v, lo, hi = _series(result, task, metric, variant)
        (line,) = ax.plot(layers, v, marker="o", ms=3, label="raw" if variant == "none" else variant)
        ok = np.isfinite(lo) & np.isfinite(hi)
        ax.fill_between(layers[ok], lo[ok], hi[ok], color=line.get_color(), alpha=0.2, lw=0)
    ax.set_xlabel("layer")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(_LABELS.get(metric, metric))
    ax.grid(alpha=0.3)
    ax.legend(frameon=False)
    ax.set_title(f"{result.name} · {task}: before and after post-processing", fontsize=10)
    return fig


def _fmt(v: Any) -> str:
    return "–" if v is None or not isinstance(v, (int, float)) or not math.isfinite(v) else f"{v:.4g}"


def _table(res: Any, task: str, postprocess: str) -> list[str]:
    lines = ["| layer | " + " | ".join(_LABELS.get(m, m) for m in TABLE_METRICS) + " |",
             "|---:|" + "---:|" * len(TABLE_METRICS)]
    for layer in res.layers():
        cells = []
        for m in TABLE_METRICS:
            try:
                r = res.value(task, layer, m, postprocess)
            except KeyError:
                cells.append("–")
                continue
            cells.append(f"{_fmt(r['value'])} [{_fmt(r['low'])}, {_fmt(r['high'])}]")
        lines.append(f"| {layer} | " + " | ".join(cells) + " |")
    return lines


def build_token_report(results: Any, out: str | os.PathLike, *, comparisons: Sequence[Any] = (),
                       title: str = "embedgeom token report", formats: Sequence[str] = ("png",)) -> Path:
    """Write every token figure (layer curves of all results per task and post-processing, rogue-dimension bars
    per result at its first and last layer, before/after curves where a post-processing was applied), the per-layer
    tables and the paired comparisons into ``out`` (``index.md``, figures, ``manifest.json``), whole or not at all.
    Returns the path of ``index.md``."""
    from .token_results import TokenGeometryResult

    results = _as_list(results)
    if not results or not all(isinstance(r, TokenGeometryResult) for r in results):
        raise ValueError("results: expected one or more TokenGeometryResult (token_geometry() or "
                         "TokenGeometryResult.load).")
    for ext in formats:
        if ext not in ("png", "pdf", "svg"):
            raise ValueError(f"formats: expected png, pdf or svg, got {ext!r}.")

    def build(tmp: Path) -> None:
        used: set[str] = set()
        lines = [f"# {title}", "", "Token-level geometry per layer (0 = embeddings) over the non-special tokens of "
                 "the analysed texts; intervals are delete-a-group jackknife intervals over texts. Definitions: "
                 "`embedgeom metrics` (kind `token`).", ""]

        def save(fig: Any, stem: str) -> str:
            name = unique_name(safe_name(stem, default="figure"), used)
            for ext in formats:
                fig.savefig(tmp / f"{name}.{ext}", dpi=150 if ext == "png" else None)
            return f"{name}.{formats[0]}"

        tasks = list(dict.fromkeys(t for r in results for t in r.tasks))
        for task in tasks:
            lines += [f"## {task}", ""]
            holders = [r for r in results if task in r.tasks]
            for variant in dict.fromkeys(v for r in holders for v in r.postprocessings()):
                which = [r for r in holders if variant in r.postprocessings()]
                label = "raw" if variant == "none" else f"after {variant}"
                png = save(layer_curves(which, task, postprocess=variant), f"{task}-curves-{variant}")
                lines += [f"### Layer curves ({label})", "", f"![{task} layer curves, {label}]({png})", ""]
            for res in holders:
                lines += [f"### {res.name}", ""]
                for variant in res.postprocessings():
                    lines += [f"Per layer ({'raw' if variant == 'none' else 'after ' + variant}; value [interval]):",
                              "", *_table(res, task, variant), ""]
                    layers = res.layers()
                    for layer in dict.fromkeys((layers[0], layers[-1])):
                        rows = [r for r in res.metrics if (r["task"], int(r["layer"]), r["metric"],
                                                           r["postprocess"]) == (task, layer, "rogue_share", variant)]
                        top = rows[0].get("dimensions", []) if rows else []
                        fig = rogue_bars(res, task, layer=layer, postprocess=variant)
                        lines += [f"Rogue dimensions at layer {layer} ({'raw' if variant == 'none' else variant}; "
                                  f"top {len(top)}: {top}):", "",
                                  f"![rogue dimensions]({save(fig, f'{res.name}-{task}-rogue-{layer}-{variant}')})", ""]
                if len(res.postprocessings()) > 1:
                    for metric in ("anisotropy", "self_similarity", "rogue_share"):
                        fig = postprocess_effect(res, task, metric)
                        lines += [f"{_LABELS.get(metric, metric)} before and after {res.postprocessings()[1]}:", "",
                                  f"![before and after]({save(fig, f'{res.name}-{task}-post-{metric}')})", ""]
        for cmp in comparisons:
            conf = cmp.options.get("confidence", 0.95)
            lines += [f"## {cmp.b} − {cmp.a} (paired on the same texts, {float(conf) * 100:.4g}% CI; * = the interval "
                      "excludes 0)", "", "| task | layer | postprocess | metric | a | b | b − a | interval | |",
                      "|---|---:|---|---|---:|---:|---:|---|---|"]
            for r in cmp.differences:
                lines.append(f"| {r['task']} | {r['layer']} | {r.get('postprocess', 'none')} | {r['name']} | "
                             f"{_fmt(r['value_a'])} | {_fmt(r['value_b'])} | {_fmt(r['diff'])} | "
                             f"[{_fmt(r['low'])}, {_fmt(r['high'])}] | {'*' if r.get('significant') else ''} |")
            lines.append("")
        (tmp / "index.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
        write_manifest(tmp, "manifest.json", {"format": REPORT_FORMAT, "version": 1, "title": title,
                                              "kind": "tokens", "models": [r.name for r in results]})

    return write_output(out, REPORT_FORMAT, build) / "index.md"
