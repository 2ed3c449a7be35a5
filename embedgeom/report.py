"""Report assembly: every figure (PNG, and PDF with TrueType fonts), ``index.md`` and a self-contained
``index.html`` rendered from that same Markdown (markdown-it-py), with a table of contents linking every heading.
What the results hold is asked of :mod:`embedgeom.queries`; figures are drawn by :mod:`embedgeom.figures`' public
functions. Metric and comparison intervals are labelled with the confidence level their result recorded (e.g.
"90% CI"); probe scores, which carry a standard error only, with ± 1.96 s.e.

What the report holds is driven by the results, never by a default pooling or layer:

* **Models**: each result's checkpoint, protocol, compute dtype, poolings and layers (trainer checkpoints
  appear through the last checkpoint of their run).
* **Per task**: its card - what the texts are, how many, whether texts or pairs were subsampled (and from how
  many, with which seed), and per model how many texts were truncated at which ``max_length``; when the models
  were measured on different n or in different dimensions d, a "Not comparable" paragraph (and an
  :class:`~embedgeom.figures.IncomparableResultsWarning`) says what is and is not comparable.
* **Per task and layer**: each model's own last layer is one group ("last layer (2 of 2; 6 of 6)"), other
  layers are grouped by index ("layer 1 of 2"; "layer 1 by index (1 of 2; 1 of 6)" across depths), a model's
  last layer never appearing under an index heading beside other models' inner layers. Each group has a
  combined table (one row per model and pooling, headline metrics with intervals, n), a best-first ranking per
  metric (direction from :data:`embedgeom.metrics.REGISTRY`), eigenspectra, alignment vs uniformity, effective
  rank by pooling, cosine histograms and probes (with chance lines), each with a caption stating layers, n,
  intervals and (histograms) the drawn range and bins.
* **Layer profiles** per pooling when a result measured more than one layer (by relative depth when the models'
  depths differ, else by index).
* **Default vs reference protocol** side by side when a result carries a companion ``result.paper``.
* **Training trajectories**: results with ``checkpoint['trajectory']`` grouped by run, metrics against step.
* **Comparisons**: per task, layer and pooling, the paired differences (diff = b − a, second minus first)
  as a table (with n, and p / adjusted p where the comparison recorded them), a figure of the differences in
  each metric's own units with the better direction named, and a "Significant" line listing every row whose
  interval excludes 0.

What is drawn can be chosen: ``tasks=``, ``layers=`` ("all", "last" / -1, an index k >= 0, or -k from each
model's end) and ``figures=`` (names in :data:`REPORT_FIGURES`); an unknown name is refused in one line listing
the valid ones. A figure with nothing to draw is not written; its section says why in one line. The library never
prints.
"""

from __future__ import annotations

import base64
import copy
import html
import itertools
import numbers
import re
import warnings
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
#: Figures a report can draw (``figures=`` / ``--figures``), name -> what it shows.
REPORT_FIGURES: dict[str, str] = {
    "eigenspectrum": "normalised eigenspectra with the alpha-ReQ fit, per task and layer",
    "alignment-uniformity": "alignment vs uniformity, per task and layer",
    "metric-by-pooling": "effective rank (or the first headline metric) by pooling, per task and layer",
    "cosines": "pairwise cosine histograms on the range they occupy, per task and layer",
    "probes": "headline probe scores with chance lines, per task and layer",
    "layer-profile": "metrics against layer, per task and pooling",
    "trajectory": "metrics against training step for trainer runs",
    "differences": "paired differences b - a in each metric's units, per comparison, task and layer",
}


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
    model's last measured layer; the cell says 'layer of last layer', e.g. '2 of 6'), each metric as
    'value [low, high]', then n (texts)."""
    results = Q.as_results(results)
    metrics = list(metrics) if metrics is not None else headline_metrics(results, task)
    header = ["model", "pooling", "layer", *metrics, "n (texts)"]
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
            rows.append([md_escape(res.name), md_escape(p), f"{lay} of {Q.num_layers(res)}", *cells, n])
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
    figures: tuple[str, ...] = tuple(REPORT_FIGURES)
    used: set[str] = field(default_factory=set)
    written: list[Path] = field(default_factory=list)

    def wants(self, kind: str) -> bool:
        return kind in self.figures

    def figure(self, doc: _Doc, kind: str, heading: str, stem: str, make: Callable[[], Any], level: int = 4,
               caption: str = "") -> bool:
        """Draw ``make()`` under ``heading`` with its ``caption`` (Markdown) when figures of ``kind`` are chosen;
        if there is nothing to draw, say why instead of writing a file. Results of different n or d are noted
        once per task by the report itself, so the figures' own warnings about them are not repeated here."""
        if not self.wants(kind):
            return False
        doc.heading(level, heading)
        plt = F.pyplot()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", F.IncomparableResultsWarning)
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
        doc.para(caption)
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

def _layer_groups(results: Sequence[AnalysisResult], task: str, wanted: Sequence[Any] | None = None
                  ) -> list[tuple[str, int, str, list[AnalysisResult]]]:
    """(stem key, layer argument, heading text, members) per layer group of ``task``. Each model's own last layer
    is the 'last' group; other layers are grouped by index, holding only models for which that index is not the
    last layer (so a shallow model's last layer is never drawn under an index heading beside a deeper model's
    inner layer). ``wanted`` (None: all): 'all', 'last' / -1, an index k >= 0 (a model's last layer joins an
    index group only when no model has k as an inner layer), or -k (the k-th layer from each model's end)."""
    index: dict[int, list[tuple[AnalysisResult, bool]]] = {}
    lasts = []
    for res in results:
        last = Q.num_layers(res)
        lays = Q.layers_of(res, task)
        for lay in lays:
            index.setdefault(lay, []).append((res, lay == last))
        if last in lays:
            lasts.append(res)
    tokens = ["all"] if wanted is None else list(wanted)
    keys: list[Any] = []
    for tok in tokens:
        if tok == "all":
            keys += [k for k in sorted(index) if any(not is_last for _, is_last in index[k])] + [_LAST]
        elif tok in (_LAST, -1):
            keys.append(_LAST)
        else:
            keys.append(int(tok))
    out = []
    for key in dict.fromkeys(keys):
        if key == _LAST:
            members, layer, stem = lasts, -1, _LAST
        elif key >= 0:
            inner = [r for r, is_last in index.get(key, []) if not is_last]
            members, layer, stem = inner or [r for r, _ in index.get(key, [])], key, str(key)
        else:
            members = [r for r in results if Q.resolve_layer(r, task, key) is not None]
            layer, stem = key, f"m{-key}"
        if members:
            out.append((stem, layer, F.layer_phrase(members, task, layer), members))
    return out


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
    ns = {r.name: F.sample_size(r, task) for r in results if task in r.tasks}
    if len(set(ns.values())) == 1 and None not in ns.values():
        bits.append(f"n = {next(iter(ns.values())):,} {md_escape(card.get('items', 'texts'))}.")
    elif ns:
        bits.append("n (texts): " + ", ".join(f"{md_escape(k)} {v:,}" if v is not None else f"{md_escape(k)} ?"
                                             for k, v in ns.items()) + ".")
    if card.get("positive_rule"):
        bits.append(f"Positives: {md_escape(card['positive_rule'])}.")
    return " ".join(bits)


def sampling_lines(results: Sequence[AnalysisResult], task: str) -> list[str]:
    """What the task card says about subsampling and truncation, as Markdown list items: texts or pairs kept of
    how many (``subsample``: max_texts, seed, n_before), and per model how many texts were truncated at which
    ``max_length`` (``encode``: truncated, n, max_length)."""
    lines = []
    subs: dict[str, list[str]] = {}
    trunc = []
    for r in results:
        card = r.tasks.get(task) or {}
        sub = card.get("subsample")
        if isinstance(sub, Mapping) and Q.is_finite(sub.get("n_before")):
            pairs = Q.is_finite(card.get("n_pairs")) and card["n_pairs"] > 0
            kept = card["n_pairs"] if pairs else F.sample_size(r, task)
            what = (f"{int(kept):,} of {int(sub['n_before']):,} {'pairs' if pairs else 'texts'}"
                    f" (max_texts = {md_escape(sub.get('max_texts'))}, seed {md_escape(sub.get('seed'))})")
            if pairs:
                what += f", using {F.sample_size(r, task) or '?'} texts"
            subs.setdefault(what, []).append(md_escape(r.name))
        enc = card.get("encode") or {}
        if Q.is_finite(enc.get("truncated")):
            n = enc.get("n", F.sample_size(r, task))
            at = f"max_length = {enc['max_length']} tokens" if Q.is_finite(enc.get("max_length")) else \
                "max_length (unrecorded)"
            trunc.append(f"{md_escape(r.name)}: {int(enc['truncated']):,} of {int(n):,} texts at {at}"
                         if Q.is_finite(n) else f"{md_escape(r.name)}: {int(enc['truncated']):,} texts at {at}")
    for what, names in subs.items():
        who = "" if len(subs) == 1 and len(names) == len(results) else f" ({', '.join(names)})"
        lines.append(f"- Subsampled{who}: {what}.")
    if trunc:
        lines.append("- Truncated: " + "; ".join(trunc) + ".")
    return lines


def _n_text(group: Sequence[AnalysisResult], task: str) -> str:
    ns = {r.name: F.sample_size(r, task) for r in group}
    if len(set(ns.values())) == 1:
        v = next(iter(ns.values()))
        return f"n = {v:,} texts" if v is not None else "n unrecorded"
    return "n (texts): " + ", ".join(f"{k} {v:,}" if v is not None else f"{k} ?" for k, v in ns.items())


def _caption(group: Sequence[AnalysisResult], task: str, text: str, *extra: str) -> str:
    return md_escape(" ".join([f"{text[0].upper()}{text[1:]}; {_n_text(group, task)}.", *extra]))


def _histogram_note(group: Sequence[AnalysisResult], task: str, layer: int) -> str:
    try:
        span = F.cosine_histogram_range(group, task, layer=layer)
    except ValueError:
        return ""
    pairs = span["pairs"]
    drawn = {}
    for r in group:
        n = F.sample_size(r, task)
        if pairs is not None and n is not None:
            drawn[r.name] = min(pairs, n * (n - 1) // 2)
    counts = ", ".join(f"{k} {v:,}" for k, v in drawn.items())
    sampled = (f" Each histogram counts min({pairs:,}, n(n − 1)/2) pairs of texts drawn at random ({counts})."
               if drawn else "")
    return (f"Drawn on [{span['low']:.3g}, {span['high']:.3g}]: the bins the counts occupy, one bin of margin each "
            f"side, of {span['bins']} bins over [{span['stored'][0]:g}, {span['stored'][1]:g}] (bin width "
            f"{span['width']:.3g}).{sampled}")


def _task_section(doc: _Doc, w: _Writer, results: Sequence[AnalysisResult], task: str, tstem: str,
                  layers: Sequence[Any] | None = None) -> None:
    doc.heading(2, f"Task {task}")
    doc.para(_task_description(results, task))
    doc.para("\n".join(sampling_lines(results, task)))
    present = [r for r in results if task in Q.tasks_of([r])]
    note = F.comparability_note(present, task) if len(present) > 1 else None
    if note:
        warnings.warn(note, F.IncomparableResultsWarning, stacklevel=3)
        doc.para(f"Not comparable: {md_escape(note)}")
    for key, layer, text, group in _layer_groups(results, task, layers):
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
        ci = Q.ci_label(group) if not any(Q.is_reference_protocol(r) for r in group) else \
            "no intervals for reference-protocol results"
        w.figure(doc, "eigenspectrum", f"{task}, {text}: eigenspectra (normalised, log-log)", f"{lstem}-eigenspectrum",
                 lambda g=group, lay=layer: F.eigenspectrum_figure(g, task, None, lay),
                 caption=_caption(group, task, text, "λ_k / Σλ against rank k; dashed: the alpha-ReQ power-law fit "
                                  "over its rank window, α with its interval in the legend."))
        w.figure(doc, "alignment-uniformity", f"{task}, {text}: alignment vs uniformity",
                 f"{lstem}-alignment-uniformity",
                 lambda g=group, lay=layer: F.alignment_uniformity_figure(g, task, layer=lay),
                 caption=_caption(group, task, text, f"Whiskers: {ci}. Alignment is over the task's positive pairs; "
                                  "lower-left is better."))
        bar_metric = "effective_rank" if "effective_rank" in Q.metrics_of(group, task) else (metrics or [None])[0]
        if bar_metric:
            w.figure(doc, "metric-by-pooling", f"{task}, {text}: {bar_metric.replace('_', ' ')} by pooling",
                     f"{lstem}-{bar_metric.replace('_', '-')}",
                     lambda g=group, lay=layer, m=bar_metric: F.metric_by_pooling_figure(g, task, m, layer=lay),
                     caption=_caption(group, task, text, f"Whiskers: {ci}."))
        w.figure(doc, "cosines", f"{task}, {text}: pairwise cosine similarity", f"{lstem}-cosines",
                 lambda g=group, lay=layer: F.cosine_histogram_figure(g, task, None, layer=lay),
                 caption=_caption(group, task, text, _histogram_note(group, task, layer)))
        _probes(doc, w, group, task, layer, text, lstem)
    if w.wants("layer-profile") and any(len(Q.layers_of(r, task)) > 1 for r in results):
        doc.heading(3, f"{task}: layer profiles")
        multi = [r for r in results if len(Q.layers_of(r, task)) > 1]
        match = "depth" if len({Q.num_layers(r) for r in multi}) > 1 else "index"
        how = ("x = relative depth (layer / the model's last layer), so each model's last layer meets the others'"
               if match == "depth" else "x = layer index (0 = embedding output)")
        for p in Q.poolings_of(multi, task):
            w.figure(doc, "layer-profile", f"{task}: layer profile, {p} pooling", f"{tstem}-layer-profile-{p}",
                     lambda pp=p, m=match: F.layer_profile_figure(multi, task, None, pooling=pp, layer_match=m),
                     caption=_caption(multi, task, f"{how}; bands: {Q.ci_label(multi)}"))
    for res in results:
        paper = getattr(res, "paper", None)
        if isinstance(paper, AnalysisResult) and task in Q.tasks_of([paper]):
            _protocol_table(doc, res, paper, task)


def _probes(doc: _Doc, w: _Writer, group: Sequence[AnalysisResult], task: str, layer: int, text: str,
            lstem: str) -> None:
    heading = f"{task}, {text}: probes"
    rows = []
    chance = False
    for res in group:
        for p in Q.poolings_of([res], task):
            lay = Q.resolve_layer(res, task, layer, p)
            for r in res.probes:
                if r["task"] == task and r["pooling"] == p and int(r["layer"]) == lay:
                    chance = chance or Q.is_finite(r.get("chance"))
                    rows.append([md_escape(res.name), md_escape(p), str(lay), md_escape(r["probe"]),
                                 md_escape(r["metric"]), fmt_interval(r),
                                 fmt_num(r.get("chance")),
                                 str(int(r["n"])) if Q.is_finite(r.get("n")) else "–"])
    if not rows:
        doc.heading(4, heading)
        doc.para("Not drawn: no probe scores at this layer (analysed with probes=False, or the task has no labels "
                 "or scored pairs).")
        return
    extra = "Whiskers: ± 1.96 s.e." + (" Dashed: the probe's chance level (a label-blind predictor on the same "
                                       "items) where its row records one." if chance else "")
    if not w.figure(doc, "probes", heading, f"{lstem}-probes", lambda: F.probe_figure(group, task=task, layer=layer),
                    caption=_caption(group, task, text, extra)) and not w.wants("probes"):
        doc.heading(4, heading)
    ci = "value (± 1.96 s.e. where the probe has one)"
    doc.para(table_md(["model", "pooling", "layer", "probe", "metric", ci, "chance", "n"], rows))


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
                         "–" if d is None else f"{fmt_interval(d)} (layer {lay_d}{_n_cell(d)})",
                         "–" if r is None else f"{fmt_num(r['value'])} (layer {lay_r}{_n_cell(r)})", md_escape(note)])
    if not rows:
        doc.para("Not tabulated: the two protocols share no metric for this task.")
        return
    doc.para("The reference protocol (described in embedgeom/reference/PROTOCOL.md) embeds its own items (first "
             "rows of the source, pairs joined into one text, padding attended) and reports point values without "
             "intervals; '–' marks a pooling or metric one protocol does not measure.")
    doc.para(table_md(["pooling", "metric", "default protocol (layer, n)", "reference protocol (layer, n)", "note"],
                      rows))


def _n_cell(row: Mapping[str, Any]) -> str:
    return f", n = {int(row['n']):,}" if Q.is_finite(row.get("n")) else ""


def _trajectory_section(doc: _Doc, w: _Writer, runs: Mapping[str, Sequence[AnalysisResult]], used: set[str],
                        tasks: Sequence[str] | None = None, layers: Sequence[Any] | None = None) -> None:
    flat = [r for seq in runs.values() for r in seq]
    doc.heading(2, "Training trajectories")
    doc.para(f"{len(runs)} run(s), metrics against training step (checkpoints of each run sorted by step; bands are "
             "the intervals). Runs are overlaid.")
    for task in Q.tasks_of(flat):
        if tasks is not None and task not in tasks:
            continue
        tstem = unique_name(safe_name(f"trajectory-{task}", default="trajectory"), used)
        lines = sampling_lines([seq[-1] for seq in runs.values() if task in seq[-1].tasks], task)
        if lines:
            doc.para(f"{md_escape(task)} (each run's last checkpoint):\n\n" + "\n".join(lines))
        for key, layer, text, members in _layer_groups(flat, task, layers):
            group = {run: [r for r in seq if any(r is m for m in members)] for run, seq in runs.items()}
            group = {k: v for k, v in group.items() if v}
            mets = [m for m in F.TRAJECTORY_METRICS if m in Q.metrics_of(members, task)]
            for p in Q.poolings_of(members, task):
                heading = f"{task}: trajectory, {p} pooling, {text}"
                drew = w.figure(doc, "trajectory", heading, f"{tstem}-L{key}-{p}",
                                lambda g=group, t=task, pp=p, lay=layer: F.trajectory_figure(g, t, pooling=pp,
                                                                                            layer=lay),
                                level=3, caption=_caption(members, task, f"{text}; bands: {Q.ci_label(members)}"))
                if not drew and not w.wants("trajectory"):
                    doc.heading(3, heading)
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
                            n = F.sample_size(r, task)
                            rows.append([md_escape(run), str(t.get("step")),
                                         f"{int(tok):,}" if Q.is_finite(tok) else "–", *cells,
                                         f"{n:,}" if n is not None else "–"])
                if rows:
                    doc.para(table_md(["run", "step", "tokens", *map(md_escape, mets), "n (texts)"], rows))


def _significant(row: Mapping[str, Any]) -> bool:
    """A difference row's verdict: its ``significant`` flag under a multiple-comparison correction (adjusted p),
    else whether its interval excludes 0."""
    if str(row.get("correction") or "none") != "none":
        return bool(row.get("significant"))
    return Q.excludes_zero(row)


def _fmt_p(v: Any) -> str:
    return "–" if not Q.is_finite(v) else (f"{float(v):.2g}" if float(v) < 0.001 else f"{float(v):.3f}")


def _comparison_keys(cmp: ComparisonResult, keys: Sequence[tuple[int, int]], layers: Sequence[Any] | None
                     ) -> list[tuple[int, int]]:
    """The (layer a, layer b) keys of a comparison that ``layers`` chooses (None / 'all': every one)."""
    if layers is None or "all" in layers:
        return list(keys)
    last_a = (cmp.cards.get("a") or {}).get("checkpoint", {}).get("num_layers", max(k[0] for k in keys))
    last_b = (cmp.cards.get("b") or {}).get("checkpoint", {}).get("num_layers", max(k[1] for k in keys))
    out = []
    for tok in layers:
        if tok in (_LAST, -1):
            out += [k for k in keys if k == (last_a, last_b) or (k[0] == last_a and cmp.options.get("kind") ==
                                                               "poolings")]
        elif int(tok) >= 0:
            out += [k for k in keys if k[0] == int(tok)]
        else:
            out += [k for k in keys if k[0] == int(last_a) + 1 + int(tok)]
    return sorted(dict.fromkeys(out))


def _comparison_section(doc: _Doc, w: _Writer, cmp: ComparisonResult, used: set[str],
                        tasks: Sequence[str] | None = None, layers: Sequence[Any] | None = None) -> None:
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
    n_sig = sum(_significant(r) for r in cmp.differences)
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
    corrected = sorted({str(r.get("correction")) for r in cmp.differences
                        if str(r.get("correction") or "none") != "none"})
    verdict = f"{'/'.join(corrected)}-adjusted p < {1 - level:.3g}" if corrected and level is not None else (
        f"{'/'.join(corrected)}-adjusted p" if corrected else f"{ci} excludes 0")
    has_p = any(Q.is_finite(r.get("p")) for r in cmp.differences)
    has_padj = any(Q.is_finite(r.get("p_adjusted")) for r in cmp.differences)
    for task in Q.comparison_tasks(cmp):
        if tasks is not None and task not in tasks:
            continue
        rows_t = [r for r in cmp.differences if r["task"] == task]
        tstem = f"{stem0}-{safe_name(task, default='task')}"
        for key in _comparison_keys(cmp, sorted({Q.layer_key(r) for r in rows_t}), layers):
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
                sig = [r for r in prow if _significant(r)]
                listed = "; ".join(f"{md_escape(r['name'])} {fmt_interval(r, key='diff', signed=True)}" for r in sig)
                lines.append(f"- Significant ({verdict}), {md_escape(p)} pooling, {ltext}: "
                             f"{len(sig)} of {len(prow)}" + (f": {listed}" if sig else ": none"))
            doc.para("\n".join(lines))
            a_col, b_col = (md_escape(f"{pair[0]} (first)"), md_escape(f"{pair[1]} (second)")) if pair else (
                md_escape(f"{cmp.a} (a)"), md_escape(f"{cmp.b} (b)"))
            table = [[md_escape(Q.pooling_key(r)), md_escape(r.get("kind", "")), md_escape(r["name"]),
                      fmt_num(r.get("value_a")), fmt_num(r.get("value_b")),
                      fmt_interval(r, key="diff", signed=True),
                      ("yes" if _significant(r) else "no") if intervals else "–",
                      str(int(r["n"])) if Q.is_finite(r.get("n")) else "–"] for r in rows]
            sign_col = "second − first" if pair else "b − a"
            diff_col = f"diff ({sign_col})" + (f" [{ci}]" if intervals else "")
            header = ["pooling", "kind", "name", a_col, b_col, diff_col, "significant", "n"]
            if has_p:
                header.append("p")
                for line, r in zip(table, rows, strict=True):
                    line.append(_fmt_p(r.get("p")))
            if has_padj:
                header.append(f"p adjusted ({'/'.join(corrected) or 'none'})")
                for line, r in zip(table, rows, strict=True):
                    line.append(_fmt_p(r.get("p_adjusted")))
            if seeds:
                header.append("seeds")
                for line, r in zip(table, rows, strict=True):
                    line.append(f"{r.get('seeds_agree', 0)} of {seeds} ({r.get('seeds_significant', 0)})")
            doc.para(table_md(header, table))
            lstem = f"L{key[0]}" if key[0] == key[1] else f"L{key[0]}-{key[1]}"
            w.figure(doc, "differences", f"{task}: {label}, {ltext}: differences", f"{tstem}-{lstem}",
                     lambda t=task, k=key: F.difference_figure(cmp, t, layer=k[0]),
                     caption=md_escape(f"diff = {sign_col} in each metric's own units, a panel per metric or probe "
                                       "with its better direction in the title; filled: significant "
                                       f"({verdict if intervals else 'not assessed'}), coloured by the side it "
                                       "favours."))


# --- entry point ------------------------------------------------------------------------------------------

def _choice(value: Any, name: str, valid: Sequence[Any], example: str) -> list[Any] | None:
    """``value`` (None, a comma-separated string or a sequence) as a list of names from ``valid``; None = all."""
    if value is None:
        return None
    from .options import split_names

    if not isinstance(value, (str, Sequence)):
        raise ValueError(f"{name}: expected a comma-separated string or a list, got {type(value).__name__}. "
                         f"Pass e.g. {example}.")
    items = list(split_names(value))
    if not items:
        raise ValueError(f"{name}: expected at least one of {', '.join(map(str, valid))}, got none.")
    bad = [x for x in items if x not in valid]
    if bad:
        raise ValueError(f"{name}: unknown {', '.join(map(repr, bad))}; expected some of "
                         f"{', '.join(map(str, valid))}.")
    return list(dict.fromkeys(items))


def _layer_choice(value: Any, results: Sequence[AnalysisResult], tasks: Sequence[str]) -> list[Any] | None:
    """``layers`` as tokens: 'all', 'last' (also -1), k >= 0 (measured in some model), -k (some model has its k-th
    layer from the end measured); one ValueError listing the valid values otherwise."""
    if value is None:
        return None
    from .options import split_names

    raw = [value] if isinstance(value, (int, str)) and not isinstance(value, bool) else value
    if not isinstance(raw, Sequence) or isinstance(raw, bytes):
        raise ValueError(f"layers: expected a comma-separated string or a list, got {type(value).__name__}. "
                         "Pass e.g. 'last,0' or ['all'].")
    items = [t for v in raw for t in (split_names(v) if isinstance(v, str) else (v,))]
    measured = sorted({lay for r in results for t in tasks for lay in Q.layers_of(r, t)})
    depth = max((Q.num_layers(r) for r in results), default=0)
    valid_text = f"all, last (= -1), {', '.join(map(str, measured))}, or -k counted from each model's end"
    out: list[Any] = []
    for item in items:
        tok: Any = item.strip().lower() if isinstance(item, str) else item
        if isinstance(tok, str) and re.fullmatch(r"[+-]?\d+", tok):
            tok = int(tok)
        if tok in ("all", _LAST):
            out.append(tok)
            continue
        if isinstance(tok, numbers.Integral) and not isinstance(tok, bool):
            tok = int(tok)
            if tok == -1:
                out.append(_LAST)
                continue
            if (tok >= 0 and tok in measured) or (tok < 0 and -tok <= depth + 1 and any(
                    Q.resolve_layer(r, t, tok) is not None for r in results for t in tasks)):
                out.append(tok)
                continue
        raise ValueError(f"layers: unknown {item!r}; expected some of {valid_text}.")
    if not out:
        raise ValueError(f"layers: expected at least one of {valid_text}, got none.")
    return list(dict.fromkeys(out))


def build_report(results: Sequence[AnalysisResult] | AnalysisResult, out: str | Path, *,
                 comparisons: Sequence[ComparisonResult] = (), title: str = "embedgeom report",
                 formats: Sequence[str] = ("png", "pdf"), tasks: str | Sequence[str] | None = None,
                 layers: str | int | Sequence[str | int] | None = None,
                 figures: str | Sequence[str] | None = None) -> Path:
    """Write every figure (PNG always, plus the other ``formats``: pdf, svg), ``index.md`` and a self-contained
    ``index.html`` (rendered from index.md, figures embedded) to ``out``; returns the path of index.md. The report
    is built beside ``out`` and swapped in whole (:func:`embedgeom.storage.write_output`): an earlier report there
    is replaced, an interrupted build leaves it intact, and a directory holding anything else is refused.

    ``results``: analyses (ordinary models, and trainer checkpoints carrying ``checkpoint['trajectory']``);
    ``comparisons``: results of :func:`embedgeom.compare` (two models, or two poolings of one model).
    What is drawn (each a comma-separated string or a list; None = all): ``tasks`` (tasks held by the results or
    comparisons), ``layers`` ('all', 'last' or -1 = each model's last layer, k >= 0 = layer index k, -k = the
    k-th layer from each model's end) and ``figures`` (names of :data:`REPORT_FIGURES`; tables are written
    whatever figures are chosen). An unknown name raises one ValueError listing the valid ones."""
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
    present = list(dict.fromkeys([*Q.tasks_of(results), *(t for c in comparisons for t in Q.comparison_tasks(c))]))
    chosen_tasks = _choice(tasks, "tasks", present, "'lee,polarity'")
    chosen_figures = _choice(figures, "figures", list(REPORT_FIGURES), "'eigenspectrum,probes'")
    chosen_layers = _layer_choice(layers, results, chosen_tasks or present)
    models, runs = _models(results)

    def build(tmp: Path) -> None:
        doc = _Doc(" ".join(title.split()))
        w = _Writer(tmp, fmts, tuple(chosen_figures or REPORT_FIGURES))
        _models_section(doc, models, runs)
        used: set[str] = set()
        for task in Q.tasks_of(models):
            if chosen_tasks is None or task in chosen_tasks:
                _task_section(doc, w, models, task, unique_name(safe_name(task, default="task"), used), chosen_layers)
        if runs:
            _trajectory_section(doc, w, runs, used, chosen_tasks, chosen_layers)
        for cmp in comparisons:
            _comparison_section(doc, w, cmp, used, chosen_tasks, chosen_layers)
        text = doc.markdown()
        (tmp / "index.md").write_text(text, encoding="utf-8")
        (tmp / "index.html").write_text(render_html(text, tmp, doc.title), encoding="utf-8")
        write_manifest(tmp, "manifest.json", {"format": REPORT_FORMAT, "version": VERSION, "title": doc.title,
                                              "models": [r.name for r in models],
                                              "comparisons": [f"{c.b} - {c.a}" for c in comparisons],
                                              "tasks": chosen_tasks or present, "layers": chosen_layers or ["all"],
                                              "figures": list(w.figures)})

    return write_output(out, REPORT_FORMAT, build) / "index.md"
