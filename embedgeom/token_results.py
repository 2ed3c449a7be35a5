"""The result of :func:`embedgeom.tokens`, its tidy table and its files, and the paired comparison of two
models' token geometry on the same texts.

A saved token result (``embedgeom tokens --out DIR``) is written whole or not at all
(:func:`embedgeom.storage.write_output`) and holds ``tokens.json`` (checkpoint card, task cards, options,
reproducibility card, metric rows; the sha256 of every other file and of its own rows), ``metrics.csv`` (the tidy
table of :meth:`TokenGeometryResult.to_frame`) and ``arrays.npz`` (per row, its jackknife replicates, which paired
comparisons need; per layer, every dimension's share of the expected cosine). ``load`` refuses files of two runs, a
value edited by hand, and a value outside its metric's range.

:func:`compare_tokens` pairs two results by texts: both must hold the same texts per task and the same jackknife
groups (same seed and groups), so each replicate leaves the same texts out of both models and the interval of
``b - a`` comes from the replicate differences (delete-a-group jackknife of the difference). It returns an
:class:`embedgeom.results.ComparisonResult` (``options.kind == "tokens"``, ``pooling == "tokens"`` in every row, and
a ``postprocess`` field).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .metrics import jackknife
from .metrics.tokens import TOKEN_METRICS
from .results import ComparisonResult, array_key, csv_safe
from .storage import TOKENS_FORMAT, check_manifest, write_manifest, write_output

VERSION = 1
MANIFEST = "tokens.json"
#: Columns of :meth:`TokenGeometryResult.to_frame`, in order.
COLUMNS = ("model", "task", "layer", "postprocess", "metric", "value", "stderr", "low", "high", "n", "confidence",
           "method", "replicates")


@dataclass
class TokenGeometryResult:
    """What :func:`embedgeom.tokens` measured on one checkpoint.

    ``metrics`` rows: task, layer, postprocess (``none``, or the post-processing the row was measured after),
    metric, value, stderr, low, high, n, confidence, method, replicates (``rogue_share`` rows also ``dimensions``,
    the top dimensions); ``arrays``: ``rep|task|layer|postprocess|metric`` (the jackknife replicates),
    ``rogue|task|layer|postprocess`` (each dimension's share of the expected cosine) and ``contrib|...`` (each
    dimension's contribution)."""

    checkpoint: dict[str, Any]
    tasks: dict[str, dict[str, Any]]
    options: dict[str, Any]
    metrics: list[dict[str, Any]]
    arrays: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    card: dict[str, Any] = field(default_factory=dict)
    name: str = ""

    def __post_init__(self) -> None:
        if not self.name:
            spec = str(self.checkpoint.get("spec") or "model").rstrip("/")
            self.name = Path(spec).name or spec

    def __repr__(self) -> str:
        return (f"TokenGeometryResult({self.name!r}, tasks={list(self.tasks)}, layers={self.layers()}, "
                f"postprocess={self.postprocessings()}, {len(self.metrics)} rows)")

    def layers(self) -> list[int]:
        return sorted({int(r["layer"]) for r in self.metrics})

    def postprocessings(self) -> list[str]:
        return list(dict.fromkeys(str(r["postprocess"]) for r in self.metrics))

    def value(self, task: str, layer: int, metric: str, postprocess: str = "none") -> dict[str, Any]:
        """The row of ``metric`` for ``task`` at ``layer`` (after ``postprocess``); KeyError naming what exists."""
        for r in self.metrics:
            if (r["task"], int(r["layer"]), r["metric"], r["postprocess"]) == (task, layer, metric, postprocess):
                return r
        raise KeyError(f"{metric} not measured for {task}/layer {layer}/postprocess {postprocess} in {self.name!r} "
                       f"(tasks {list(self.tasks)}, layers {self.layers()}, postprocess {self.postprocessings()})")

    def replicates(self, task: str, layer: int, metric: str, postprocess: str = "none") -> np.ndarray:
        return self.arrays[array_key("rep", task, layer, postprocess, metric)]

    def rogue_shares(self, task: str, layer: int, postprocess: str = "none") -> np.ndarray:
        return self.arrays[array_key("rogue", task, layer, postprocess)]

    def to_frame(self) -> Any:
        """One tidy pandas DataFrame, a row per (task, layer, postprocess, metric)."""
        import pandas as pd

        frame = pd.DataFrame([{"model": self.name, **{k: v for k, v in r.items() if k != "dimensions"},
                               **({"dimensions": " ".join(map(str, r["dimensions"]))} if "dimensions" in r else {})}
                              for r in self.metrics])
        for c in COLUMNS:
            if c not in frame:
                frame[c] = np.nan
        return frame[list(COLUMNS) + [c for c in frame.columns if c not in COLUMNS]]

    # --- persistence ---------------------------------------------------------------------------------------
    def write_into(self, directory: Path) -> None:
        """This result's files and manifest in ``directory`` (inside :func:`embedgeom.storage.write_output`)."""
        directory.mkdir(exist_ok=True)
        np.savez(directory / "arrays.npz", **self.arrays)
        csv_safe(self.to_frame()).to_csv(directory / "metrics.csv", index=False)
        write_manifest(directory, MANIFEST, {"format": TOKENS_FORMAT, "version": VERSION, "name": self.name,
                                             "checkpoint": self.checkpoint, "tasks": self.tasks,
                                             "options": self.options, "card": self.card, "metrics": self.metrics})

    def save(self, directory: str | os.PathLike) -> Path:
        """Write tokens.json, metrics.csv and arrays.npz to ``directory``, whole or not at all; an earlier token
        result there is replaced, a directory holding anything else is refused before anything is written."""
        return write_output(directory, TOKENS_FORMAT, self.write_into)

    @classmethod
    def load(cls, directory: str | os.PathLike) -> TokenGeometryResult:
        """Read a directory written by :meth:`save`, refusing one whose files or rows do not match its manifest or
        whose values lie outside their metric's range."""
        d = Path(directory).expanduser()
        path = d / MANIFEST
        if not path.is_file():
            raise FileNotFoundError(f"result: {path} does not exist; expected a directory written by embedgeom "
                                    "tokens --out.")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as err:
            raise ValueError(f"result: {path} is not valid JSON ({err}). Re-run embedgeom tokens --out.") from None
        if not isinstance(data, dict) or data.get("format") != TOKENS_FORMAT:
            raise ValueError(f"result: {path} is not a token-geometry result. Point at a directory written by "
                             "embedgeom tokens --out.")
        if int(data.get("version", 0)) > VERSION:
            raise ValueError(f"result: {path} has format version {data.get('version')}; this embedgeom reads up to "
                             f"{VERSION}. Upgrade embedgeom.")
        check_manifest(path, data, require=("files", "content_hash"), fix="re-run embedgeom tokens --out")
        with np.load(d / "arrays.npz", allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        for key in ("checkpoint", "tasks", "options", "metrics"):
            if not isinstance(data.get(key), (dict, list)):
                raise ValueError(f"result: {path} has no usable {key!r} entry. Re-run embedgeom tokens --out.")
        res = cls(data["checkpoint"], data["tasks"], data["options"], data["metrics"], arrays, data.get("card") or {},
                  str(data.get("name") or ""))
        for r in res.metrics:
            info = TOKEN_METRICS.get(str(r.get("metric")))
            v = r.get("value")
            if info is not None and info.bounds is not None and isinstance(v, (int, float)) and math.isfinite(v) \
                    and not info.bounds[0] - 1e-9 <= v <= info.bounds[1] + 1e-9:
                raise ValueError(f"result: {path}: {info.name} = {v!r} for {r.get('task')}/layer {r.get('layer')} lies "
                                 f"outside the metric's range {list(info.bounds)}: the file was edited or damaged. "
                                 "Re-run embedgeom tokens --out.")
        return res


def compare_tokens(a: TokenGeometryResult, b: TokenGeometryResult, *, confidence: float | None = None
                   ) -> ComparisonResult:
    """Paired differences ``b - a`` of every token metric both results hold (same task, layer, post-processing) on
    the same texts: the interval is the delete-a-group jackknife of the difference over the same groups of texts
    (Student-t on groups - 1 degrees of freedom; ``confidence`` defaults to ``a``'s). Refuses results of different
    texts or jackknife groups, naming the fix."""
    for res, which in ((a, "a"), (b, "b")):
        if not isinstance(res, TokenGeometryResult):
            raise ValueError(f"{which}: expected a TokenGeometryResult (token_geometry() or TokenGeometryResult.load), "
                             f"got {type(res).__name__}.")
    conf = float(confidence if confidence is not None else a.options.get("confidence", 0.95))
    if not 0 < conf < 1:
        raise ValueError(f"confidence: expected a level strictly between 0 and 1, got {confidence!r}.")
    shared = [t for t in a.tasks if t in b.tasks]
    if not shared:
        raise ValueError(f"b: expected tasks shared with a ({list(a.tasks)}), got {list(b.tasks)}. Analyse the same "
                         "data specs.")
    for t in shared:
        if a.tasks[t].get("texts_hash") != b.tasks[t].get("texts_hash"):
            raise ValueError(f"b: task {t!r} holds other texts than in a (content hashes differ); paired differences "
                             "need the same texts. Use the same --data, --max-texts and --seed.")
        if (a.tasks[t].get("groups"), a.options.get("seed")) != (b.tasks[t].get("groups"), b.options.get("seed")):
            raise ValueError(f"b: task {t!r} was jackknifed with other groups than in a (groups "
                             f"{a.tasks[t].get('groups')} vs {b.tasks[t].get('groups')}, seed "
                             f"{a.options.get('seed')} vs {b.options.get('seed')}). Use the same --groups and --seed.")
    index = {(r["task"], int(r["layer"]), r["postprocess"], r["metric"]): r for r in b.metrics}
    rows = []
    for ra in a.metrics:
        key = (ra["task"], int(ra["layer"]), ra["postprocess"], ra["metric"])
        rb = index.get(key)
        if rb is None or ra["task"] not in shared:
            continue
        diff = float(rb["value"]) - float(ra["value"])
        reps = b.replicates(*key[:2], key[3], key[2]) - a.replicates(*key[:2], key[3], key[2])
        row = {"task": key[0], "pooling": "tokens", "layer": key[1], "postprocess": key[2], "kind": "metric",
               "name": key[3], "value_a": float(ra["value"]), "value_b": float(rb["value"]), "diff": diff,
               "n": int(min(ra.get("n", 0), rb.get("n", 0)))}
        method = f"paired delete-a-group jackknife over texts ({reps.size} groups) of b - a"
        if math.isfinite(diff) and np.isfinite(reps).all() and reps.size >= 2:
            iv = jackknife.interval(diff, reps, row["n"], conf, method)
            row.update(stderr=iv.stderr, low=iv.low, high=iv.high, significant=bool(iv.excludes(0.0)),
                       method=iv.method)
        else:
            row.update(stderr=math.nan, low=math.nan, high=math.nan, significant=False,
                       method=method + "; undefined in some replicate: no interval")
        rows.append(row)
    options = {"kind": "tokens", "confidence": conf, "groups": a.options.get("groups"), "seed": a.options.get("seed"),
               "direction": "diff = b - a (second minus first)", "tasks": shared}
    return ComparisonResult(a.name, b.name, rows, [], options, {"a": a.checkpoint, "b": b.checkpoint})


def save_token_results(directory: str | os.PathLike, results: list[TokenGeometryResult],
                       comparisons: list[ComparisonResult] = ()) -> Path:
    """Several token results (each in a subdirectory named after its model) and their comparisons (``<a>-vs-<b>``)
    as one output with a manifest over all of them, whole or not at all."""
    from .storage import COLLECTION_FORMAT, safe_name, unique_name

    if not results or not all(isinstance(r, TokenGeometryResult) for r in results):
        raise ValueError("results: expected a non-empty list of TokenGeometryResult.")
    used: set[str] = set()
    named: list[tuple[str, Any]] = [(unique_name(safe_name(r.name, default="model"), used), r) for r in results]
    named += [(unique_name(f"{safe_name(c.a, default='a')}-vs-{safe_name(c.b, default='b')}", used), c)
              for c in comparisons]

    def build(tmp: Path) -> None:
        for name, r in named:
            r.write_into(tmp / name)
        write_manifest(tmp, "manifest.json", {"format": COLLECTION_FORMAT, "version": VERSION,
                                              "entries": sorted(n for n, _ in named)})

    return write_output(directory, COLLECTION_FORMAT, build)
