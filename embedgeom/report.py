"""Report assembly: every figure (PNG, and PDF with TrueType fonts), ``index.md`` and a self-contained
``index.html`` rendered from that same Markdown (markdown-it-py), with a table of contents linking every heading.
What the results hold is asked of :mod:`embedgeom.queries`; figures are drawn by :mod:`embedgeom.figures`' public
functions. Metric and comparison intervals are labelled with the confidence level their result recorded (e.g.
"90% CI"); probe scores, which carry a standard error only, with ± 1.96 s.e.

What the report holds is driven by the results, never by a default pooling or layer:

* **Models**: each result's checkpoint, protocol, compute dtype, poolings and layers (trainer checkpoints
  appear through the last checkpoint of their run).
* **Per task and layer** (each layer measured; models of different depth meet at "last layer"): a combined
  table (one row per model and pooling, headline metrics with intervals), a best-first ranking per metric
  (direction from :data:`embedgeom.metrics.REGISTRY`), eigenspectra, alignment vs uniformity, effective rank by
  pooling, cosine histograms and probes, each pooling a panel or series.
* **Layer profiles** per pooling when a result measured more than one layer.
* **Default vs reference protocol** side by side when a result carries a companion ``result.paper``.
* **Training trajectories**: results with ``checkpoint['trajectory']`` grouped by run, metrics against step.
* **Comparisons**: per task, layer and pooling, the paired differences (diff = b − a, second minus first)
  as a table, a forest plot and a "Significant" line listing every row whose interval excludes 0.

A figure with nothing to draw is not written; its section says why in one line. The library never prints.
"""

from __future__ import annotations

import base64
import copy
import html
import itertools
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import figures as F
from . import queries as Q
from .results import VERSION, AnalysisResult, ComparisonResult
from .storage import REPORT_FORMAT, display_path, inside, safe_name, unique_name, write_manifest, write_output

#: Columns of the per-task tables (those present), default protocol first, then the reference protocol's own.
HEADLINE_METRICS: tuple[str, ...] = ("uniformity", "alignment", "effective_rank", "rankme", "isoscore", "mean_cosine",
                                     "alpha_req")
PAPER_HEADLINE_METRICS: tuple[str, ...] = ("spectral_entropy", "stable_rank", "rank_90",
                                           "alignment_class_conditional", "intra_inter_ratio")
#: default-protocol metric -> (reference-protocol metric, what the two rows compare).
PROTOCOL_METRICS: tuple[tuple[str, str, str], ...] = (
    ("effective_rank", "effective_rank", "same definition (exp entropy of normalised singular values)"),
    ("stable_rank", "stable_rank", "same definition"),
    ("spectral_entropy", "spectral_entropy", ""),  # note depends on normalisation, filled in below
    ("uniformity", "uniformity", "same definition; the reference uses a seeded subset of up to 1,000 rows"),
    ("rank_at_variance", "rank_90", "same definition (components explaining 90% of the variance)"),
    ("alignment", "alignment_class_conditional",
     "different quantities: positive-pair alignment (Wang & Isola) vs the reference's class-conditional "
     "4th-power alignment"),
)
FORMATS = ("png", "pdf", "svg")
_LAST = "last"


# --- Markdown ---------------------------------------------------------------------------------------------

_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|~#!])")


def md_escape(text: Any) -> str:
    """``text`` as literal Markdown inline text (data-derived names never become markup)."""
    return _MD_SPECIAL.sub(r"\\\1", " ".join(str(text).split()))


def _code(text: Any) -> str:
    s = str(text)
    return f"`{s}`" if "`" not in s and s.strip() and "\n" not in s else md_escape(s)


def slugify(text: str) -> str:
    """GitHub-style heading anchor: lower case, punctuation dropped, spaces -> '-'."""
    s = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return s.replace(" ", "-") or "section"


class Slugger:
    """Unique anchors in document order (a repeated heading gets -1, -2, ... as on GitHub)."""

    def __init__(self) -> None:
        self.used: set[str] = set()

    def __call__(self, text: str) -> str:
        base = slugify(text)
        slug, k = base, 1
        while slug in self.used:
            slug, k = f"{base}-{k}", k + 1
        self.used.add(slug)
        return slug


def table_md(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table; cells are Markdown already (escape data with :func:`md_escape`)."""
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(c or " " for c in r) + " |" for r in rows]
    return "\n".join(out)


@dataclass
class _Doc:
    title: str
    blocks: list[tuple[str, Any]] = field(default_factory=list)

    def heading(self, level: int, text: str) -> None:
        self.blocks.append(("h", (level, text)))

    def para(self, markdown: str) -> None:
        if markdown.strip():
            self.blocks.append(("p", markdown))

    def markdown(self) -> str:
        slug = Slugger()
        slug(self.title)
        slug("Contents")
        toc = []
        for kind, val in self.blocks:
            if kind == "h":
                level, text = val
                toc.append(f"{'  ' * (level - 2)}- [{md_escape(text)}](#{slug(text)})")
        md = [f"# {md_escape(self.title)}", "", "## Contents", "", *toc, ""]
        for kind, val in self.blocks:
            if kind == "h":
                level, text = val
                md += ["#" * level + " " + md_escape(text), ""]
            else:
                md += [val, ""]
        return "\n".join(md)


# --- HTML -------------------------------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;line-height:1.5;color:#1f2328;
max-width:1150px;margin:2em auto;padding:0 1.2em;background:#fff}
h1{border-bottom:2px solid #d0d7de;padding-bottom:.3em}
h2{border-bottom:1px solid #d0d7de;padding-bottom:.2em;margin-top:2em}
h3{margin-top:1.6em}h4{margin-top:1.2em;color:#444}
a{color:#0969da;text-decoration:none}a:hover{text-decoration:underline}
table{border-collapse:collapse;font-size:13px;margin:.6em 0;display:block;overflow-x:auto}
th,td{border:1px solid #d0d7de;padding:3px 8px;text-align:right;white-space:nowrap}
th{background:#f6f8fa}tr:nth-child(even) td{background:#fafbfc}
td:first-child,th:first-child{text-align:left}
code{background:#f3f4f6;padding:.1em .3em;border-radius:4px;font-size:90%}
img{max-width:100%;height:auto;border:1px solid #eee;margin:.4em 0}
ul{padding-left:1.4em}li{margin:.1em 0}
"""


def render_html(markdown: str, out: Path | None = None, title: str = "embedgeom report") -> str:
    """``markdown`` rendered with markdown-it-py (CommonMark + tables), each heading given the id its table of
    contents links to (:class:`Slugger`), images under ``out`` embedded as base64 data URIs."""
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark", {"html": False}).enable("table")
    tokens = md.parse(markdown)
    slug = Slugger()
    for i, tok in enumerate(tokens):
        if tok.type == "heading_open":
            inline = tokens[i + 1]
            text = "".join(c.content for c in inline.children or () if c.type in ("text", "code_inline"))
            tok.attrSet("id", slug(text))
        if tok.type == "inline" and out is not None:
            for child in tok.children or ():
                if child.type == "image":
                    child.attrSet("src", _data_uri(out, str(child.attrGet("src") or "")))
    body = md.renderer.render(tokens, md.options, {})
    return ("<!doctype html>\n<html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>\n<body>\n{body}</body></html>\n")


def _data_uri(out: Path, src: str) -> str:
    mime = {"png": "image/png", "svg": "image/svg+xml", "jpg": "image/jpeg", "jpeg": "image/jpeg"}
    ext = src.rsplit(".", 1)[-1].lower()
    try:
        path = inside(out, src)
        data = path.read_bytes()
    except (ValueError, OSError):
        return src
    return f"data:{mime.get(ext, 'application/octet-stream')};base64,{base64.b64encode(data).decode()}"


# --- numbers ----------------------------------------------------------------------------------------------

def fmt_num(v: Any, *, signed: bool = False) -> str:
    """4 significant digits ('–' for a missing or non-finite value)."""
    if not Q.is_finite(v):
        return "–"
    return f"{float(v):+.4g}" if signed else f"{float(v):.4g}"


def fmt_interval(row: Mapping[str, Any], *, key: str = "value", signed: bool = False) -> str:
    """'value [low, high]' from a row's interval; 'value ± 1.96 s.e.' when it has only a standard error;
    the value alone when it has neither (reference protocol)."""
    v = fmt_num(row.get(key), signed=signed)
    if v == "–":
        return v
    lo, hi, se = row.get("low"), row.get("high"), row.get("stderr")
    if Q.is_finite(lo) and Q.is_finite(hi):
        return f"{v} [{fmt_num(lo, signed=signed)}, {fmt_num(hi, signed=signed)}]"
    if Q.is_finite(se) and se > 0:
        return f"{v} ± {fmt_num(Q.Z95 * float(se))}"
    return v


def compute_dtype_note(result: AnalysisResult) -> str:
    """The forward-pass dtype(s) a result's embeddings were computed in, and the outcome of ``auto``'s check."""
    used: dict[str, None] = {}
    rejected: dict[str, None] = {}
    for card in result.tasks.values():
        enc = card.get("encode", {}) or {}
        used.setdefault(str(enc.get("compute_dtype") or card.get("dtype") or
                            (card.get("forward") or {}).get("dtype") or "?"))
        check = enc.get("precision_check")
        if check and not check.get("passed"):
            rejected.setdefault(str(check.get("dtype")))
    note = "computed in " + " and ".join(used or {"?": None})
    if rejected:
        note += f" ({' and '.join(rejected)} failed the precision check)"
    return note


def _direction(metric: str) -> bool | None:
    from .metrics import REGISTRY

    info = REGISTRY.get(metric)
    return None if info is None else info.higher_is_better


def headline_metrics(results: Sequence[AnalysisResult], task: str) -> list[str]:
    present = set(Q.metrics_of(results, task))
    chosen = [m for m in HEADLINE_METRICS if m in present]
    if present & {"rank_90", "alignment_class_conditional", "intra_inter_ratio"}:
        chosen += [m for m in PAPER_HEADLINE_METRICS if m in present and m not in chosen]
    return chosen


def summary_rows(results: Sequence[AnalysisResult], task: str, metrics: Sequence[str] | None = None, *,
                 layer: int | None = None) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the combined table for ``task``: one row per model and pooling at ``layer`` (None: each
    model's last measured layer), each metric as 'value [low, high]', then n."""
    results = Q.as_results(results)
    metrics = list(metrics) if metrics is not None else headline_metrics(results, task)
    header = ["model", "pooling", "layer", *metrics, "n"]
    rows = []
    for res in results:
        for p in Q.poolings_of([res], task):
            lay = Q.resolve_layer(res, task, layer, p)
            if lay is None or not any(r["task"] == task and r["pooling"] == p and int(r["layer"]) == lay
                                      for r in res.metrics):
                continue
            cells, n = [], "–"
            for m in metrics:
                try:
                    r = res.value(task, p, lay, m)
                except KeyError:
                    cells.append("–")
                    continue
                cells.append(fmt_interval(r))
                if m != "alignment" and Q.is_finite(r.get("n")) and n == "–":
                    n = str(int(r["n"]))
            rows.append([md_escape(res.name), md_escape(p), str(lay), *cells, n])
    return header, rows


def ranking_lines(results: Sequence[AnalysisResult], task: str, metrics: Sequence[str], layer: int | None
                  ) -> list[str]:
    """Per metric, models best first within each pooling (point estimates; intervals are in the table)."""
    lines, unranked = [], []
    for m in metrics:
        better = _direction(m)
        if better is None:
            unranked.append(m)
            continue
        parts = []
        for p in Q.poolings_of(results, task):
            vals = []
            for res in results:
                row = Q.metric_row(res, task, p, Q.resolve_layer(res, task, layer, p), m)
                if row is not None:
                    vals.append((float(row["value"]), res.name))
            if len(vals) < 2:
                continue
            vals.sort(key=lambda t: -t[0] if better else t[0])
            chain = md_escape(vals[0][1]) + f" ({fmt_num(vals[0][0])})"
            for (v0, _), (v1, name) in itertools.pairwise(vals):
                chain += (" = " if fmt_num(v0) == fmt_num(v1) else " > ") + f"{md_escape(name)} ({fmt_num(v1)})"
            parts.append(f"{md_escape(p)}: {chain}")
        if parts:
            lines.append(f"- {md_escape(m)} ({'higher' if better else 'lower'} is better): " + "; ".join(parts))
    if lines and unranked:
        lines.append(f"- not ranked (no better direction registered): {', '.join(md_escape(m) for m in unranked)}")
    return lines


# --- figures ----------------------------------------------------------------------------------------------

@dataclass
class _Writer:
    out: Path
    formats: tuple[str, ...]
    used: set[str] = field(default_factory=set)
    written: list[Path] = field(default_factory=list)

    def figure(self, doc: _Doc, heading: str, stem: str, make: Callable[[], Any], level: int = 4) -> bool:
        """Draw ``make()`` under ``heading``; if there is nothing to draw, say why instead of writing a file."""
        doc.heading(level, heading)
        plt = F.pyplot()
        try:
            fig = make()
        except F.NothingToDraw as why:
            doc.para(f"Not drawn: {md_escape(str(why))}")
            return False
        if not F.has_data(fig):
            plt.close(fig)
            doc.para("Not drawn: nothing to draw (no finite values).")
            return False
        name = unique_name(safe_name(stem, default="figure", max_length=100), self.used)
        self.written += save_figure(fig, self.out, name, self.formats)
        doc.para(f"![{md_escape(heading)}]({name}.png)")
        return True


def save_figure(fig: Any, out: Path, stem: str, formats: Sequence[str] = ("png", "pdf")) -> list[Path]:
    """Save ``fig`` as ``out/stem.<ext>`` for each format, PDF/PS fonts as TrueType (Type 42, not Type 3) via an
    rc context, then close it."""
    import matplotlib

    plt = F.pyplot()
    paths = []
    try:
        with matplotlib.rc_context({"pdf.fonttype": 42, "ps.fonttype": 42}):
            for ext in formats:
                path = inside(out, f"{stem}.{ext}")
                fig.savefig(path, dpi=150 if ext == "png" else None)
                paths.append(path)
    finally:
        plt.close(fig)
    return paths


# --- layer groups -----------------------------------------------------------------------------------------

def _layer_groups(results: Sequence[AnalysisResult], task: str) -> list[tuple[Any, int, str]]:
    """(key, layer argument, heading text) per layer measured for ``task``: each model's last layer is grouped as
    'last' (so models of different depth meet there), other layers by index."""
    keys: dict[Any, dict[str, int]] = {}
    for res in results:
        last = Q.num_layers(res)
        for lay in Q.layers_of(res, task):
            keys.setdefault(_LAST if lay == last else lay, {})[res.name] = lay
    ordered = sorted((k for k in keys if k != _LAST), key=int) + ([_LAST] if _LAST in keys else [])
    out = []
    for k in ordered:
        if k == _LAST:
            lays = set(keys[k].values())
            text = f"layer {next(iter(lays))} (last)" if len(lays) == 1 else "last layer (" + ", ".join(
                f"{n}: {v}" for n, v in keys[k].items()) + ")"
            out.append((k, -1, text))
        else:
            out.append((k, int(k), f"layer {k}"))
    return out


def _in_group(results: Sequence[AnalysisResult], task: str, layer: int) -> list[AnalysisResult]:
    return [r for r in results if Q.resolve_layer(r, task, layer) is not None]


def _unique_names(results: Sequence[AnalysisResult]) -> list[AnalysisResult]:
    seen: set[str] = set()
    out = []
    for r in results:
        name = unique_name(r.name or "model", seen)
        if name != r.name:
            r = copy.copy(r)
            r.name = name
        out.append(r)
    return out


def _models(results: Sequence[AnalysisResult]) -> tuple[list[AnalysisResult], dict[str, list[AnalysisResult]]]:
    """Ordinary models (results without a trajectory, plus each run's last checkpoint labelled 'run (step N)')
    and the runs."""
    runs = Q.group_runs(results)
    plain = [r for r in results if Q.trajectory_of(r) is None]
    for run, seq in runs.items():
        final = copy.copy(seq[-1])
        final.name = f"{run} (step {Q.trajectory_of(seq[-1])['step']})"  # type: ignore[index]
        plain.append(final)
    return _unique_names(plain), runs


# --- sections ---------------------------------------------------------------------------------------------

def _models_section(doc: _Doc, results: Sequence[AnalysisResult], runs: Mapping[str, Sequence[AnalysisResult]]
                    ) -> None:
    doc.heading(2, "Models")
    items = []
    for r in results:
        ck = r.checkpoint
        params = ck.get("num_parameters")
        bits = [_code(display_path(ck.get("spec") or "?"))]
        if Q.is_finite(params):
            bits.append(f"{float(params) / 1e6:.1f}M params" if params >= 1e6 else f"{int(params):,} params")
        bits.append(f"{md_escape(r.options.get('protocol', 'default'))} protocol")
        bits.append(md_escape(compute_dtype_note(r)))
        pools = list(dict.fromkeys(p for _, p, _ in r.measured()))
        lays = sorted({lay for _, _, lay in r.measured()})
        if pools:
            bits.append("poolings " + ", ".join(md_escape(p) for p in pools))
        if lays:
            bits.append("layers " + ", ".join(map(str, lays)))
        if getattr(r, "paper", None) is not None:
            bits.append("with a reference-protocol companion")
        items.append(f"- **{md_escape(r.name)}**: " + "; ".join(bits))
    for run, seq in runs.items():
        t = [Q.trajectory_of(r) or {} for r in seq]
        obj = next((x.get("objective") for x in t if x.get("objective")), None)
        items.append(f"- run **{md_escape(run)}**" + (f" ({md_escape(obj)})" if obj else "") + ": checkpoints at "
                     "steps " + ", ".join(str(x.get("step")) for x in t))
    doc.para("\n".join(items))
    levels = Q.confidence_levels([*results, *(r for seq in runs.values() for r in seq[:-1])])
    if len(levels) == 1:
        at = f" at {next(iter(levels))} confidence"
    elif levels:
        at = "; confidence " + ", ".join(f"{lvl} for {', '.join(map(md_escape, names))}"
                                         for lvl, names in levels.items())
    else:
        at = ""
    ci = (f"Intervals are the results' own (jackknife over texts{at}; see each row's method); n is the "
          "number of texts (positive pairs for alignment).")
    if any(Q.is_reference_protocol(r) for r in results):
        ci += " Reference-protocol values are point estimates, without intervals."
    doc.para(ci)


def _task_description(results: Sequence[AnalysisResult], task: str) -> str:
    card = next((r.tasks[task] for r in results if task in r.tasks), {}) or {}
    bits = []
    if card.get("description"):
        bits.append(md_escape(str(card["description"]).rstrip(".")) + ".")
    n = card.get("n_items", card.get("n_texts", card.get("n")))
    if n is not None:
        bits.append(f"{md_escape(n)} {md_escape(card.get('items', 'texts'))}.")
    if card.get("positive_rule"):
        bits.append(f"Positives: {md_escape(card['positive_rule'])}.")
    return " ".join(bits)


def _task_section(doc: _Doc, w: _Writer, results: Sequence[AnalysisResult], task: str, tstem: str) -> None:
    doc.heading(2, f"Task {task}")
    doc.para(_task_description(results, task))
    for key, layer, text in _layer_groups(results, task):
        group = _in_group(results, task, layer)
        lstem = f"{tstem}-L{key}"
        doc.heading(3, f"{task}, {text}")
        metrics = headline_metrics(group, task)
        header, rows = summary_rows(group, task, metrics, layer=layer)
        if rows:
            doc.para(table_md([md_escape(h) for h in header], rows))
        if len(group) > 1:
            lines = ranking_lines(group, task, metrics, layer)
            if lines:
                doc.para("Ranking, best first (point estimates):\n\n" + "\n".join(lines))
        w.figure(doc, f"{task}, {text}: eigenspectra (normalised, log-log)", f"{lstem}-eigenspectrum",
                 lambda g=group, lay=layer: F.eigenspectrum_figure(g, task, None, lay))
        w.figure(doc, f"{task}, {text}: alignment vs uniformity", f"{lstem}-alignment-uniformity",
                 lambda g=group, lay=layer: F.alignment_uniformity_figure(g, task, layer=lay))
        bar_metric = "effective_rank" if "effective_rank" in Q.metrics_of(group, task) else (metrics or [None])[0]
        if bar_metric:
            w.figure(doc, f"{task}, {text}: {bar_metric.replace('_', ' ')} by pooling",
                     f"{lstem}-{bar_metric.replace('_', '-')}",
                     lambda g=group, lay=layer, m=bar_metric: F.metric_by_pooling_figure(g, task, m, layer=lay))
        w.figure(doc, f"{task}, {text}: pairwise cosine similarity", f"{lstem}-cosines",
                 lambda g=group, lay=layer: F.cosine_histogram_figure(g, task, None, layer=lay))
        _probes(doc, w, group, task, layer, text, lstem)
    if any(len(Q.layers_of(r, task)) > 1 for r in results):
        doc.heading(3, f"{task}: layer profiles")
        multi = [r for r in results if len(Q.layers_of(r, task)) > 1]
        for p in Q.poolings_of(multi, task):
            w.figure(doc, f"{task}: layer profile, {p} pooling", f"{tstem}-layer-profile-{p}",
                     lambda pp=p: F.layer_profile_figure(multi, task, None, pooling=pp))
    for res in results:
        paper = getattr(res, "paper", None)
        if isinstance(paper, AnalysisResult) and task in Q.tasks_of([paper]):
            _protocol_table(doc, res, paper, task)


def _probes(doc: _Doc, w: _Writer, group: Sequence[AnalysisResult], task: str, layer: int, text: str,
            lstem: str) -> None:
    heading = f"{task}, {text}: probes"
    rows = []
    for res in group:
        for p in Q.poolings_of([res], task):
            lay = Q.resolve_layer(res, task, layer, p)
            for r in res.probes:
                if r["task"] == task and r["pooling"] == p and int(r["layer"]) == lay:
                    rows.append([md_escape(res.name), md_escape(p), str(lay), md_escape(r["probe"]),
                                 md_escape(r["metric"]), fmt_interval(r),
                                 str(int(r["n"])) if Q.is_finite(r.get("n")) else "–"])
    if not rows:
        doc.heading(4, heading)
        doc.para("Not drawn: no probe scores at this layer (analysed with probes=False, or the task has no labels "
                 "or scored pairs).")
        return
    w.figure(doc, heading, f"{lstem}-probes", lambda: F.probe_figure(group, task=task, layer=layer))
    ci = "value (± 1.96 s.e. where the probe has one)"
    doc.para(table_md(["model", "pooling", "layer", "probe", "metric", ci, "n"], rows))


def _protocol_table(doc: _Doc, res: AnalysisResult, paper: AnalysisResult, task: str) -> None:
    doc.heading(3, f"{task}: default vs reference protocol ({res.name})")
    norm = ((res.options.get("metric_definitions") or {}).get("spectral_entropy") or {}).get("options", {}).get(
        "normalize")
    notes = {"spectral_entropy": "same entropy; the default reports nats, the reference divides by log min(n, D)"
             if not norm else "same definition (normalised by log of the spectrum length)"}
    pools = list(dict.fromkeys([*Q.poolings_of([res], task), *Q.poolings_of([paper], task)]))
    rows = []
    for p in pools:
        lay_d = Q.resolve_layer(res, task, None, p)
        lay_r = Q.resolve_layer(paper, task, None, p)
        for dm, rm, note in PROTOCOL_METRICS:
            d = Q.metric_row(res, task, p, lay_d, dm) if lay_d is not None else None
            r = Q.metric_row(paper, task, p, lay_r, rm) if lay_r is not None else None
            if d is None and r is None:
                continue
            note = notes.get(dm, note)
            if p == "attention" and lay_d is not None and lay_r is not None:
                note += "; pooling differs: the encoder's own first-token attention vs an untrained random head"
            rows.append([md_escape(p), md_escape(dm if dm == rm else f"{dm} vs {rm}"),
                         "–" if d is None else f"{fmt_interval(d)} (layer {lay_d})",
                         "–" if r is None else f"{fmt_num(r['value'])} (layer {lay_r})", md_escape(note)])
    if not rows:
        doc.para("Not tabulated: the two protocols share no metric for this task.")
        return
    doc.para("The reference protocol (described in embedgeom/reference/PROTOCOL.md) embeds its own items (first "
             "rows of the source, pairs joined into one text, padding attended) and reports point values without "
             "intervals; '–' marks a pooling or metric one protocol does not measure.")
    doc.para(table_md(["pooling", "metric", "default protocol", "reference protocol", "note"], rows))


def _trajectory_section(doc: _Doc, w: _Writer, runs: Mapping[str, Sequence[AnalysisResult]], used: set[str]
                        ) -> None:
    flat = [r for seq in runs.values() for r in seq]
    doc.heading(2, "Training trajectories")
    doc.para(f"{len(runs)} run(s), metrics against training step (checkpoints of each run sorted by step; bands are "
             "the intervals). Runs are overlaid.")
    for task in Q.tasks_of(flat):
        tstem = unique_name(safe_name(f"trajectory-{task}", default="trajectory"), used)
        for key, layer, text in _layer_groups(flat, task):
            group = {run: [r for r in seq if Q.resolve_layer(r, task, layer) is not None] for run, seq in runs.items()}
            group = {k: v for k, v in group.items() if v}
            members = [r for seq in group.values() for r in seq]
            mets = [m for m in F.TRAJECTORY_METRICS if m in Q.metrics_of(members, task)]
            for p in Q.poolings_of(members, task):
                heading = f"{task}: trajectory, {p} pooling, {text}"
                w.figure(doc, heading, f"{tstem}-L{key}-{p}",
                         lambda g=group, t=task, pp=p, lay=layer: F.trajectory_figure(g, t, pooling=pp, layer=lay),
                         level=3)
                rows = []
                for run, seq in group.items():
                    for r in seq:
                        t = Q.trajectory_of(r) or {}
                        lay = Q.resolve_layer(r, task, layer, p)
                        cells = []
                        for m in mets:
                            row = Q.metric_row(r, task, p, lay, m)
                            cells.append("–" if row is None else fmt_interval(row))
                        if any(c != "–" for c in cells):
                            tok = t.get("tokens")
                            rows.append([md_escape(run), str(t.get("step")),
                                         f"{int(tok):,}" if Q.is_finite(tok) else "–", *cells])
                if rows:
                    doc.para(table_md(["run", "step", "tokens", *map(md_escape, mets)], rows))


def _comparison_section(doc: _Doc, w: _Writer, cmp: ComparisonResult, used: set[str]) -> None:
    label = Q.comparison_label(cmp)
    level = Q.confidence_of(cmp)
    ci = Q.ci_label([cmp])  # e.g. '90% CI': the confidence the comparison recorded
    doc.heading(2, f"Comparison: {label}")
    if cmp.options.get("kind") == "poolings":
        sign = (f"diff = second − first pooling of {md_escape(Q.comparison_model(cmp))}, paired on the same "
                "texts.")
    else:
        sign = f"diff = b − a (second minus first): a = {md_escape(cmp.a)}, b = {md_escape(cmp.b)}."
    seeds = int(cmp.options["seeds"]) if cmp.options.get("kind") == "groups" else 0
    if seeds:
        members = cmp.options.get("members", {})
        sign += (f" Seed groups of {seeds} runs paired by position (a: {md_escape(', '.join(members.get('a', [])))}; "
                 f"b: {md_escape(', '.join(members.get('b', [])))}): diff is the mean of the per-seed paired "
                 "differences and its interval a between-seed t-interval, which includes training variation; "
                 "'seeds' = in how many seeds the difference has the mean's sign (in brackets: how many of those "
                 "have a text-sampling interval excluding 0).")
    n_sig = sum(Q.excludes_zero(r) for r in cmp.differences)
    intervals = Q.has_intervals(cmp)
    if intervals:
        at = Q.percent(level) if level is not None else "an unrecorded confidence level"
        chance = "" if level is None else (f" With many rows, expect about {(1 - level) * 100:.4g}% to exclude 0 "
                                           "by chance.")
        doc.para(f"{sign} Intervals at {at}; 'significant' = the interval excludes 0 ({n_sig} of "
                 f"{len(cmp.differences)} rows).{chance}")
    else:
        doc.para(f"{sign} Reference protocol: point differences without intervals, so no row is called "
                 "significant; the figure shows diff / |a|.")
    pair = Q.comparison_poolings(cmp)
    if pair is not None:
        base = f"differences-{Q.comparison_model(cmp)}-{pair[1]}-vs-{pair[0]}"
    else:
        base = f"differences-{cmp.a}-vs-{cmp.b}"
    stem0 = unique_name(safe_name(base, default="differences", max_length=80), used)
    for task in Q.comparison_tasks(cmp):
        rows_t = [r for r in cmp.differences if r["task"] == task]
        tstem = f"{stem0}-{safe_name(task, default='task')}"
        for key in sorted({Q.layer_key(r) for r in rows_t}):
            rows = [r for r in rows_t if Q.layer_key(r) == key]
            ltext = Q.layer_key_text(key)
            doc.heading(3, f"{task}: {label}, {ltext}")
            lines = []
            for p in dict.fromkeys(Q.pooling_key(r) for r in rows):
                prow = [r for r in rows if Q.pooling_key(r) == p]
                if not intervals:
                    lines.append(f"- Significant, {md_escape(p)} pooling, {ltext}: not assessed ({len(prow)} point "
                                 "differences, no intervals)")
                    continue
                sig = [r for r in prow if Q.excludes_zero(r)]
                listed = "; ".join(f"{md_escape(r['name'])} {fmt_interval(r, key='diff', signed=True)}" for r in sig)
                lines.append(f"- Significant ({ci} excludes 0), {md_escape(p)} pooling, {ltext}: "
                             f"{len(sig)} of {len(prow)}" + (f": {listed}" if sig else ": none"))
            doc.para("\n".join(lines))
            a_col, b_col = (md_escape(f"{pair[0]} (first)"), md_escape(f"{pair[1]} (second)")) if pair else (
                md_escape(f"{cmp.a} (a)"), md_escape(f"{cmp.b} (b)"))
            table = [[md_escape(Q.pooling_key(r)), md_escape(r.get("kind", "")), md_escape(r["name"]),
                      fmt_num(r.get("value_a")), fmt_num(r.get("value_b")),
                      fmt_interval(r, key="diff", signed=True),
                      ("yes" if Q.excludes_zero(r) else "no") if intervals else "–"] for r in rows]
            sign_col = "second − first" if pair else "b − a"
            diff_col = f"diff ({sign_col})" + (f" [{ci}]" if intervals else "")
            header = ["pooling", "kind", "name", a_col, b_col, diff_col, "significant"]
            if seeds:
                header.append("seeds")
                for line, r in zip(table, rows, strict=True):
                    line.append(f"{r.get('seeds_agree', 0)} of {seeds} ({r.get('seeds_significant', 0)})")
            doc.para(table_md(header, table))
            lstem = f"L{key[0]}" if key[0] == key[1] else f"L{key[0]}-{key[1]}"
            w.figure(doc, f"{task}: {label}, {ltext}: differences", f"{tstem}-{lstem}",
                     lambda t=task, k=key: F.difference_figure(cmp, t, layer=k[0]))


# --- entry point ------------------------------------------------------------------------------------------

def build_report(results: Sequence[AnalysisResult] | AnalysisResult, out: str | Path, *,
                 comparisons: Sequence[ComparisonResult] = (), title: str = "embedgeom report",
                 formats: Sequence[str] = ("png", "pdf")) -> Path:
    """Write every figure (PNG always, plus the other ``formats``: pdf, svg), ``index.md`` and a self-contained
    ``index.html`` (rendered from index.md, figures embedded) to ``out``; returns the path of index.md. The report
    is built beside ``out`` and swapped in whole (:func:`embedgeom.storage.write_output`): an earlier report there
    is replaced, an interrupted build leaves it intact, and a directory holding anything else is refused.

    ``results``: analyses (ordinary models, and trainer checkpoints carrying ``checkpoint['trajectory']``);
    ``comparisons``: results of :func:`embedgeom.compare` (two models, or two poolings of one model)."""
    if isinstance(results, AnalysisResult):
        results = [results]
    if not isinstance(results, Sequence) or isinstance(results, str) or not results:
        raise ValueError("results: expected at least one analysis result, got none.")
    results = Q.as_results(results)
    if isinstance(comparisons, ComparisonResult):
        comparisons = [comparisons]
    bad = [type(c).__name__ for c in comparisons if not isinstance(c, ComparisonResult)]
    if bad:
        raise ValueError(f"comparisons: expected ComparisonResult items, got {', '.join(bad)}.")
    fmts = tuple(dict.fromkeys(["png", *(f.lower().lstrip(".") for f in formats)]))
    unknown = [f for f in fmts if f not in FORMATS]
    if unknown:
        raise ValueError(f"formats: expected some of {FORMATS}, got {list(formats)!r}.")
    if not isinstance(title, str) or not title.strip():
        raise ValueError(f"title: expected a non-empty string, got {title!r}.")
    models, runs = _models(results)

    def build(tmp: Path) -> None:
        doc = _Doc(" ".join(title.split()))
        w = _Writer(tmp, fmts)
        _models_section(doc, models, runs)
        used: set[str] = set()
        for task in Q.tasks_of(models):
            _task_section(doc, w, models, task, unique_name(safe_name(task, default="task"), used))
        if runs:
            _trajectory_section(doc, w, runs, used)
        for cmp in comparisons:
            _comparison_section(doc, w, cmp, used)
        text = doc.markdown()
        (tmp / "index.md").write_text(text, encoding="utf-8")
        (tmp / "index.html").write_text(render_html(text, tmp, doc.title), encoding="utf-8")
        write_manifest(tmp, "manifest.json", {"format": REPORT_FORMAT, "version": VERSION, "title": doc.title,
                                              "models": [r.name for r in models],
                                              "comparisons": [f"{c.b} - {c.a}" for c in comparisons]})

    return write_output(out, REPORT_FORMAT, build) / "index.md"
