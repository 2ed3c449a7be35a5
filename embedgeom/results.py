"""Result objects of analyze() and compare(): tidy tables, arrays, a reproducibility card, JSON round trip.

A saved analysis directory is written whole or not at all (:func:`embedgeom.storage.write_output`) and holds:

* ``result.json``: checkpoint card, task cards, options, reproducibility card, metric and probe rows;
* ``metrics.csv`` (and ``metrics.parquet`` when pyarrow is installed): the tidy table of :meth:`to_frame`;
* ``arrays.npz``: embeddings (unless saved without them), eigenspectra, cosine histograms, task structure
  (labels, pairs, positives) and per-item probe scores - everything compare() and report need, loaded
  without pickle.

``result.json`` (``comparison.json`` for a comparison) lists the sha256 of every other file and of its own rows;
``load`` refuses a directory whose files or rows do not match it (a result is never read from files of two runs,
nor with a value edited by hand), and a metric value outside the metric's registered range.
:func:`save_results` saves several results as one output (a trainer run's checkpoints, a set of comparisons).
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

import numpy as np

from .storage import (
    ANALYSIS_FORMAT,
    COLLECTION_FORMAT,
    COMPARISON_FORMAT,
    PAPER_DIR,
    check_manifest,
    file_digest,
    safe_name,
    unique_name,
    write_manifest,
    write_output,
)

#: 2: the manifest lists each file's sha256; 3: it also carries the sha256 of its own rows (``content_hash``)
#: and lists files in subdirectories. A version-2+ manifest without what its version promises is refused;
#: version-1 directories are still read, without those checks.
VERSION = 3
#: Characters that make a spreadsheet read a CSV cell as a formula; such text cells are written with a leading '.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_SEP = "|"


class MetricRow(TypedDict, total=False):
    """One measured metric of one embedding set (``AnalysisResult.metrics``)."""

    task: str
    pooling: str
    layer: int
    metric: str
    value: float
    stderr: float
    low: float
    high: float
    n: int
    confidence: float
    method: str
    replicates: int


class ProbeRow(TypedDict, total=False):
    """One probe score of one embedding set (``AnalysisResult.probes``). ``chance``: what a label-blind
    predictor scores on the same items (definitions in :mod:`embedgeom.probes`; NaN where none is defined);
    ``below_chance``: the upper end of the row's normal interval at the result's confidence lies below it.
    Results saved before these fields existed load with ``chance`` NaN and ``below_chance`` False."""

    task: str
    pooling: str
    layer: int
    probe: str
    metric: str
    value: float
    stderr: float
    n: int
    method: str
    chance: float
    below_chance: bool


class DifferenceRow(TypedDict, total=False):
    """One paired difference b - a (``ComparisonResult.differences``); ``kind`` is "metric" or "probe" and ``name``
    the metric (``probe:metric`` for probes); ``pooling_b`` / ``layer_b`` the second set's when they differ."""

    task: str
    pooling: str
    layer: int
    pooling_b: str
    layer_b: int
    kind: str
    name: str
    value_a: float
    value_b: float
    diff: float
    stderr: float
    low: float
    high: float
    significant: bool
    n: int
    method: str
    #: two-sided p-value of the Student-t reference the interval uses, on ``df`` degrees of freedom
    p: float
    df: int
    #: p adjusted over the comparison's family (``correction``: none, holm or bh); ``significant`` follows it
    p_adjusted: float
    correction: str
    significant_unadjusted: bool
    #: each side's dimension
    d_a: int
    d_b: int


class SimilarityRow(TypedDict, total=False):
    """One cross-model similarity (CKA, k-NN overlap) on the same texts (``ComparisonResult.similarity``)."""

    task: str
    pooling: str
    layer: int
    pooling_b: str
    layer_b: int
    name: str
    value: float
    stderr: float
    low: float
    high: float
    n: int
    confidence: float
    replicates: int
    #: k-NN overlap: the number of neighbours.
    k: int
    method: str
    #: each side's dimension
    d_a: int
    d_b: int


def array_key(*parts: Any) -> str:
    return _SEP.join(str(p) for p in parts)


def reproducibility_card(seed: int) -> dict[str, Any]:
    """Versions and host facts recorded with every result."""
    from importlib import metadata

    versions = {}
    for pkg in ("embedgeom", "torch", "transformers", "numpy", "scipy", "scikit-learn", "pandas", "tokenizers"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    return {"created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "python": sys.version.split()[0],
            "platform": platform.platform(), "seed": seed, "versions": versions,
            "command": " ".join(sys.argv) if sys.argv and sys.argv[0] else None}


def _read_json(path: Path, fmt: str) -> dict[str, Any]:
    what = "analyze" if fmt == ANALYSIS_FORMAT else "compare"
    if not path.is_file():
        raise FileNotFoundError(f"result: {path} does not exist; expected a directory written by {what} --out.")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"result: {path} is not valid JSON ({err}). Re-run {what} --out to rewrite it.") from None
    if not isinstance(data, dict) or data.get("format") != fmt:
        got = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"result: {path} is a {got!r} file, expected {fmt!r}. Point at a directory written by "
                         f"{what} --out.")
    try:
        version = int(data.get("version", 0))
    except (TypeError, ValueError):
        raise ValueError(f"result: {path} has an unreadable format version {data.get('version')!r}. Re-run {what} "
                         "--out.") from None
    if version > VERSION:
        raise ValueError(f"result: {path} has format version {version}; this embedgeom reads up to "
                         f"{VERSION}. Upgrade embedgeom.")
    promised = ("files",) * (version >= 2) + ("content_hash",) * (version >= 3)
    check_manifest(path, data, require=promised, fix=f"re-run {what} --out")
    return data


def _field(data: dict[str, Any], key: str, kind: type, path: Path) -> Any:
    """A required manifest entry of the expected JSON type, or one clear error naming the file."""
    if key not in data:
        raise ValueError(f"result: {path} has no {key!r} entry (malformed or truncated). Re-run the command that "
                         "wrote it.")
    if not isinstance(data[key], kind):
        raise ValueError(f"result: {path}: expected {key!r} to be a {kind.__name__}, got "
                         f"{type(data[key]).__name__}. Re-run the command that wrote it.")
    return data[key]


def csv_safe(frame: Any) -> Any:
    """``frame`` with every text cell that a spreadsheet would run as a formula (one starting with ``= + - @``,
    a tab or a carriage return) prefixed by ``'``; numbers are left as they are."""
    def cell(v: Any) -> Any:
        return "'" + v if isinstance(v, str) and v.startswith(_FORMULA_START) else v

    from pandas.api.types import is_numeric_dtype

    out = frame.copy()
    for c in out.columns:
        if not is_numeric_dtype(out[c]):
            out[c] = out[c].map(cell)
    return out


def _save_table(frame: Any, directory: Path, stem: str) -> None:
    csv_safe(frame).to_csv(directory / f"{stem}.csv", index=False)
    with contextlib.suppress(ImportError, ValueError):  # parquet is a convenience; the CSV holds the same table
        frame.to_parquet(directory / f"{stem}.parquet", index=False)


@dataclass
class AnalysisResult:
    """What :func:`embedgeom.analyze` measured on one checkpoint.

    ``metrics`` rows: task, pooling, layer, metric, value, stderr, low, high, n, method, replicates;
    ``probes`` rows: task, pooling, layer, probe, metric, value, stderr, n, method.
    """

    checkpoint: dict[str, Any]
    tasks: dict[str, dict[str, Any]]
    options: dict[str, Any]
    metrics: list[MetricRow]
    probes: list[ProbeRow]
    arrays: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    card: dict[str, Any] = field(default_factory=dict)
    name: str = ""
    #: The same checkpoint and data analysed with the reference study's protocol (``analyze(protocol="both")``),
    #: saved in the ``paper/`` subdirectory and shown beside the default numbers in reports.
    paper: AnalysisResult | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.name:
            spec = str(self.checkpoint.get("spec") or "model").rstrip("/")
            parts = Path(spec).parts
            self.name = "/".join(parts[-2:]) if parts and parts[-1] in ("model", "final") else (
                parts[-1] if parts else spec)

    def __repr__(self) -> str:
        poolings = sorted({p for _, p, _ in self.measured()})
        layers = sorted({lay for _, _, lay in self.measured()})
        extra = ", +paper" if self.paper is not None else ""
        return (f"AnalysisResult({self.name!r}, protocol={self.options.get('protocol', 'default')!r}, "
                f"tasks={list(self.tasks)}, poolings={poolings}, layers={layers}, {len(self.metrics)} metric rows, "
                f"{len(self.probes)} probe rows{extra})")

    def _repr_html_(self) -> str:
        """A notebook table: the headline metrics per task and pooling at the last measured layer."""
        import html as _html

        heads = ("uniformity", "alignment", "effective_rank", "rankme", "isoscore")
        rows = []
        for task, pooling, layer in self.measured():
            if layer != max(lay for t, _, lay in self.measured() if t == task):
                continue
            cells = []
            for m in heads:
                r = next((r for r in self.metrics if (r["task"], r["pooling"], int(r["layer"]), r["metric"])
                          == (task, pooling, layer, m)), None)
                cells.append("–" if r is None else f"{r['value']:.4g}" + (
                    f" [{r['low']:.3g}, {r['high']:.3g}]" if np.isfinite(r.get("low", np.nan)) else ""))
            rows.append("<tr>" + "".join(f"<td>{_html.escape(str(c))}</td>" for c in (task, pooling, layer, *cells))
                        + "</tr>")
        head = "".join(f"<th>{h}</th>" for h in ("task", "pooling", "layer", *heads))
        conf = self.options.get("confidence")
        ci = f"{float(conf) * 100:.4g}% CI" if isinstance(conf, (int, float)) and 0 < conf < 1 else "CI"
        shown = "point values" if self.options.get("protocol") == "paper" else f"value [{ci}]"
        return (f"<p><b>{_html.escape(self.name)}</b> ({_html.escape(str(self.options.get('protocol', 'default')))}"
                f" protocol; {shown})</p><table><tr>{head}</tr>{''.join(rows)}</table>")

    # --- access ---------------------------------------------------------------------------------------
    def measured(self) -> list[tuple[str, str, int]]:
        """(task, pooling, layer) triples that were measured."""
        return list(dict.fromkeys((r["task"], r["pooling"], int(r["layer"])) for r in self.metrics))

    def has_embeddings(self) -> bool:
        return any(k.startswith("emb" + _SEP) for k in self.arrays)

    def embedding(self, task: str, pooling: str, layer: int) -> np.ndarray:
        key = array_key("emb", task, pooling, layer)
        if key not in self.arrays:
            raise KeyError(f"no saved embeddings for {task}/{pooling}/layer {layer} in {self.name!r} "
                           "(analysed without embeddings, or not measured)")
        return self.arrays[key]

    def spectrum(self, task: str, pooling: str, layer: int) -> np.ndarray:
        return self.arrays[array_key("spectrum", task, pooling, layer)]

    def structure(self, task: str, what: str) -> np.ndarray | None:
        return self.arrays.get(array_key("struct", task, what))

    def value(self, task: str, pooling: str, layer: int, metric: str) -> dict[str, Any]:
        for r in self.metrics:
            if (r["task"], r["pooling"], int(r["layer"]), r["metric"]) == (task, pooling, layer, metric):
                return r
        raise KeyError(f"{metric} not measured for {task}/{pooling}/layer {layer}")

    def __getitem__(self, task: str) -> Any:
        """``result["lee"]``: the tidy rows of one task (:meth:`to_frame` filtered to it); an unknown task is a
        KeyError listing the tasks this result holds."""
        if task not in self.tasks:
            raise KeyError(f"task: {task!r} is not in {self.name!r}; it holds {', '.join(map(repr, self.tasks))}")
        frame = self.to_frame()
        return frame[frame["task"] == task].reset_index(drop=True)

    def to_frame(self) -> Any:
        """One tidy pandas DataFrame: a row per (task, pooling, layer, kind, name)."""
        import pandas as pd

        rows = [{"model": self.name, "kind": "metric", "name": r["metric"], **{k: v for k, v in r.items()
                                                                             if k != "metric"}}
                for r in self.metrics]
        rows += [{"model": self.name, "kind": "probe", "name": f"{r['probe']}:{r['metric']}",
                  **{k: v for k, v in r.items() if k not in ("probe", "metric")}} for r in self.probes]
        cols = ["model", "task", "pooling", "layer", "kind", "name", "value", "stderr", "low", "high", "n",
                "method", "replicates"]
        frame = pd.DataFrame(rows)
        for c in cols:
            if c not in frame:
                frame[c] = np.nan
        return frame[cols + [c for c in frame.columns if c not in cols]]

    # --- persistence ----------------------------------------------------------------------------------
    def write_into(self, directory: Path, *, embeddings: bool = True) -> None:
        """Write this result's files and manifest into ``directory`` (created if needed; not atomic on its own:
        :meth:`save` and :func:`save_results` call it inside :func:`embedgeom.storage.write_output`)."""
        directory.mkdir(exist_ok=True)
        arrays = {k: v for k, v in self.arrays.items() if embeddings or not k.startswith("emb" + _SEP)}
        np.savez(directory / "arrays.npz", **arrays)
        _save_table(self.to_frame(), directory, "metrics")
        content = {"format": ANALYSIS_FORMAT, "version": VERSION, "name": self.name,
                   "checkpoint": self.checkpoint, "tasks": self.tasks, "options": self.options, "card": self.card,
                   "metrics": self.metrics, "probes": self.probes, "embeddings_saved": embeddings}
        if self.paper is not None:
            self.paper.write_into(directory / PAPER_DIR, embeddings=embeddings)
            content["paper_manifest"] = file_digest(directory / PAPER_DIR / "result.json")
        write_manifest(directory, "result.json", content)

    def save(self, directory: str | os.PathLike, *, embeddings: bool = True) -> Path:
        """Write result.json, metrics.csv(/.parquet) and arrays.npz to ``directory``, whole or not at all (see
        :func:`embedgeom.storage.write_output`): an earlier analysis there is replaced; a directory holding
        anything else is refused before anything is written."""
        return write_output(directory, ANALYSIS_FORMAT, lambda tmp: self.write_into(tmp, embeddings=embeddings))

    @classmethod
    def load(cls, directory: str | os.PathLike) -> AnalysisResult:
        """Read a directory written by :meth:`save`, refusing one whose files or rows do not match its manifest
        or whose values lie outside their metric's range."""
        d = Path(directory).expanduser()
        path = d / "result.json"
        data = _read_json(path, ANALYSIS_FORMAT)
        arrays: dict[str, np.ndarray] = {}
        if (d / "arrays.npz").is_file():
            try:
                with np.load(d / "arrays.npz", allow_pickle=False) as npz:
                    arrays = {k: npz[k] for k in npz.files}
            except Exception as err:  # a damaged archive: name it
                raise ValueError(f"result: {d / 'arrays.npz'} is unreadable ({type(err).__name__}: {err}). Re-run "
                                 "analyze --out.") from None
        paper = None
        if data.get("paper_manifest"):
            companion = d / PAPER_DIR / "result.json"
            if not companion.is_file() or file_digest(companion) != data["paper_manifest"]:
                raise ValueError(f"result: {companion} is missing or does not belong to {path} (content hash "
                                 "differs). Re-run analyze --protocol both --out.")
            paper = cls.load(d / PAPER_DIR)
        probes = _field(data, "probes", list, path)
        for r in probes:  # saved before probe rows had a chance level: none is known, none is claimed
            if isinstance(r, dict) and "chance" not in r:
                r.setdefault("chance", float("nan"))
                r.setdefault("below_chance", False)
        res = cls(_field(data, "checkpoint", dict, path), _field(data, "tasks", dict, path),
                  _field(data, "options", dict, path), _field(data, "metrics", list, path),
                  probes, arrays, data.get("card") or {}, str(data.get("name") or ""),
                  paper)
        _check_bounds(res, path)
        return res


def _check_bounds(res: AnalysisResult, path: Path) -> None:
    """Refuse a default-protocol metric value outside its registered range (``REGISTRY[name].bounds``), taken at
    its loosest for the row's n (any dimension), so only an impossible value is refused."""
    if res.options.get("protocol", "default") != "default":
        return
    from .metrics.registry import REGISTRY

    defs = res.options.get("metric_definitions") or {}
    for r in res.metrics:
        info = REGISTRY.get(str(r.get("metric")))
        value, n = r.get("value"), r.get("n")
        if info is None or info.bounds is None or not isinstance(value, (int, float)) or not np.isfinite(value) \
                or not isinstance(n, int) or n < 2:
            continue
        recorded = defs.get(info.name, {}).get("options") if isinstance(defs.get(info.name), dict) else None
        lo, hi = info.bounds(n, 1 << 30, {**info.kwargs, **(recorded or {})})
        tol = 1e-9 * max(1.0, abs(lo), abs(hi))
        if not lo - tol <= value <= hi + tol:
            raise ValueError(f"result: {path}: {info.name} = {value!r} for {r.get('task')}/{r.get('pooling')}/layer "
                             f"{r.get('layer')} lies outside the metric's range [{lo:g}, {hi:g}] at n = {n}: the file "
                             "was edited or damaged. Re-run analyze --out.")


@dataclass
class ComparisonResult:
    """What :func:`embedgeom.compare` found between model ``a`` (reference) and model ``b``.

    ``differences`` rows: task, pooling, layer, kind (metric/probe), name, value_a, value_b, diff = b - a
    (what changed going from the reference ``a`` to ``b``), stderr, low, high, significant (the interval
    excludes 0), n, method. ``similarity`` rows: linear CKA
    (plain and debiased) and k-NN overlap between the two models' embeddings of the same texts, with CIs.
    """

    a: str
    b: str
    differences: list[DifferenceRow]
    similarity: list[SimilarityRow]
    options: dict[str, Any]
    cards: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        sig = sum(bool(r.get("significant")) for r in self.differences)
        return (f"ComparisonResult({self.b!r} − {self.a!r}, kind={self.options.get('kind', 'models')!r}, "
                f"{len(self.differences)} differences ({sig} significant), {len(self.similarity)} similarity rows)")

    def to_frame(self, which: str = "differences") -> Any:
        import pandas as pd

        if which not in ("differences", "similarity"):
            raise ValueError(f"which: expected 'differences' or 'similarity', got {which!r}.")
        rows = self.differences if which == "differences" else self.similarity
        return pd.DataFrame([{"a": self.a, "b": self.b, **r} for r in rows])

    def write_into(self, directory: Path) -> None:
        """Write this comparison's files and manifest into ``directory`` (see
        :meth:`AnalysisResult.write_into`)."""
        directory.mkdir(exist_ok=True)
        _save_table(self.to_frame("differences"), directory, "differences")
        _save_table(self.to_frame("similarity"), directory, "similarity")
        write_manifest(directory, "comparison.json",
                       {"format": COMPARISON_FORMAT, "version": VERSION, "a": self.a, "b": self.b,
                        "options": self.options, "cards": self.cards, "differences": self.differences,
                        "similarity": self.similarity})

    def save(self, directory: str | os.PathLike) -> Path:
        """Write comparison.json, differences.csv and similarity.csv to ``directory``, whole or not at all."""
        return write_output(directory, COMPARISON_FORMAT, self.write_into)

    @classmethod
    def load(cls, directory: str | os.PathLike) -> ComparisonResult:
        path = Path(directory).expanduser() / "comparison.json"
        data = _read_json(path, COMPARISON_FORMAT)
        return cls(str(_field(data, "a", str, path)), str(_field(data, "b", str, path)),
                   _field(data, "differences", list, path), _field(data, "similarity", list, path),
                   _field(data, "options", dict, path), data.get("cards") or {})


def save_results(directory: str | os.PathLike, results: Any, *, embeddings: bool = True) -> dict[str, Path]:
    """Save several results (analyses, e.g. a trainer run's checkpoints, or comparisons) as one output: each in a
    subdirectory named by ``results``' keys (made file-safe and unique), with a manifest over all of them; written
    whole or not at all, like :meth:`AnalysisResult.save`. ``results``: a mapping name -> result. Returns name ->
    subdirectory."""
    if not hasattr(results, "items") or not results:
        raise ValueError(f"results: expected a non-empty mapping of name -> result, got {type(results).__name__}.")
    bad = [type(r).__name__ for r in results.values() if not isinstance(r, (AnalysisResult, ComparisonResult))]
    if bad:
        raise ValueError(f"results: expected AnalysisResult or ComparisonResult values, got {', '.join(bad)}.")
    used: set[str] = set()
    names = {key: unique_name(safe_name(key, default="result"), used) for key in results}

    def build(tmp: Path) -> None:
        for key, r in results.items():
            if isinstance(r, AnalysisResult):
                r.write_into(tmp / names[key], embeddings=embeddings)
            else:
                r.write_into(tmp / names[key])
        write_manifest(tmp, "manifest.json", {"format": COLLECTION_FORMAT, "version": VERSION,
                                              "entries": sorted(names.values())})

    d = write_output(directory, COLLECTION_FORMAT, build)
    return {key: d / name for key, name in names.items()}
