"""Result objects of analyze() and compare(): tidy tables, arrays, a reproducibility card, JSON round trip.

A saved analysis directory holds:

* ``result.json``: checkpoint card, task cards, options, reproducibility card, metric and probe rows;
* ``metrics.csv`` (and ``metrics.parquet`` when pyarrow is installed): the tidy table of :meth:`to_frame`;
* ``arrays.npz``: embeddings (unless saved without them), eigenspectra, cosine histograms, task structure
  (labels, pairs, positives) and per-item probe scores - everything compare() and report need, loaded
  without pickle.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .cache import atomic_write_text

ANALYSIS_FORMAT = "embedgeom-analysis"
COMPARISON_FORMAT = "embedgeom-comparison"
VERSION = 1
_SEP = "|"


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


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1, default=_json_default, allow_nan=True) + "\n")


def _read_json(path: Path, fmt: str) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"result: {path} does not exist; expected a directory written by "
                                f"{'analyze' if fmt == ANALYSIS_FORMAT else 'compare'} --out.")
    try:
        data = json.loads(path.read_text())
    except ValueError as err:
        raise ValueError(f"result: {path} is not valid JSON ({err}).") from None
    if data.get("format") != fmt:
        raise ValueError(f"result: {path} is a {data.get('format')!r} file, expected {fmt!r}.")
    if int(data.get("version", 0)) > VERSION:
        raise ValueError(f"result: {path} has format version {data['version']}; this embedgeom reads up to "
                         f"{VERSION}. Upgrade embedgeom.")
    return data


def _save_table(frame: Any, directory: Path, stem: str) -> None:
    frame.to_csv(directory / f"{stem}.csv", index=False)
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
    metrics: list[dict[str, Any]]
    probes: list[dict[str, Any]]
    arrays: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    card: dict[str, Any] = field(default_factory=dict)
    name: str = ""

    def __post_init__(self) -> None:
        if not self.name:
            spec = str(self.checkpoint.get("spec") or "model").rstrip("/")
            parts = Path(spec).parts
            self.name = "/".join(parts[-2:]) if parts and parts[-1] in ("model", "final") else (
                parts[-1] if parts else spec)

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
    def save(self, directory: str | os.PathLike, *, embeddings: bool = True) -> Path:
        """Write result.json, metrics.csv(/.parquet) and arrays.npz to ``directory`` (created if needed)."""
        d = Path(directory).expanduser()
        d.mkdir(parents=True, exist_ok=True)
        arrays = {k: v for k, v in self.arrays.items() if embeddings or not k.startswith("emb" + _SEP)}
        tmp = d / f".arrays.{uuid.uuid4().hex}.tmp.npz"
        np.savez(tmp, **arrays)
        os.replace(tmp, d / "arrays.npz")
        _save_table(self.to_frame(), d, "metrics")
        _write_json(d / "result.json", {"format": ANALYSIS_FORMAT, "version": VERSION, "name": self.name,
                                        "checkpoint": self.checkpoint, "tasks": self.tasks,
                                        "options": self.options, "card": self.card, "metrics": self.metrics,
                                        "probes": self.probes, "embeddings_saved": embeddings})
        return d

    @classmethod
    def load(cls, directory: str | os.PathLike) -> AnalysisResult:
        d = Path(directory).expanduser()
        data = _read_json(d / "result.json", ANALYSIS_FORMAT)
        arrays: dict[str, np.ndarray] = {}
        if (d / "arrays.npz").is_file():
            with np.load(d / "arrays.npz", allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
        return cls(data["checkpoint"], data["tasks"], data["options"], data["metrics"], data["probes"], arrays,
                   data.get("card", {}), data.get("name", ""))


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
    differences: list[dict[str, Any]]
    similarity: list[dict[str, Any]]
    options: dict[str, Any]
    cards: dict[str, Any] = field(default_factory=dict)

    def to_frame(self, which: str = "differences") -> Any:
        import pandas as pd

        if which not in ("differences", "similarity"):
            raise ValueError(f"which: expected 'differences' or 'similarity', got {which!r}.")
        rows = self.differences if which == "differences" else self.similarity
        return pd.DataFrame([{"a": self.a, "b": self.b, **r} for r in rows])

    def save(self, directory: str | os.PathLike) -> Path:
        d = Path(directory).expanduser()
        d.mkdir(parents=True, exist_ok=True)
        _save_table(self.to_frame("differences"), d, "differences")
        _save_table(self.to_frame("similarity"), d, "similarity")
        _write_json(d / "comparison.json", {"format": COMPARISON_FORMAT, "version": VERSION, "a": self.a,
                                            "b": self.b, "options": self.options, "cards": self.cards,
                                            "differences": self.differences, "similarity": self.similarity})
        return d

    @classmethod
    def load(cls, directory: str | os.PathLike) -> ComparisonResult:
        d = Path(directory).expanduser()
        data = _read_json(d / "comparison.json", COMPARISON_FORMAT)
        return cls(data["a"], data["b"], data["differences"], data["similarity"], data["options"],
                   data.get("cards", {}))
