"""Precomputed embeddings: analyse vectors that already exist (a vector-store export, an API's output, another
toolkit's) without a model, in memory bounded by blocks rather than by the file.

* **Files**: ``.npy`` (memory-mapped, never read whole), ``.safetensors`` (one 2-D tensor, read by row slices;
  ``key`` names it when the file holds several) and ``.parquet`` (one column of fixed-length float lists, read a
  row group at a time; ``key`` names the column when there are several). Rows are float16/32/64; every block is
  measured in float32 (float64 stays float64), as vectors from a model are.
* **Structure** (optional): ``labels`` (one class per row: ``.npy`` of integers, or a ``.txt`` with one label per
  line; or one score per row: ``.npy`` of floats, a regression target for the ridge probe), ``pairs`` (an
  ``(m, 2)`` integer ``.npy`` of row indices) and ``scores`` (an ``(m,)`` ``.npy``, one score per pair).
  Without scores every pair is a positive (alignment); with scores the pairs are a similarity
  task (Spearman of cosine against score) and the positives are the pairs at or above the 80th percentile score.
  Row i of two files analysed with the same structure is taken to be the same item (compare pairs rows by index).
* **What is measured**: every single-set metric with its jackknife interval through
  :func:`embedgeom.metrics.tiled.streamed_measure` (blocks of rows; exact uniformity's time grows as n^2),
  alignment on the positives, the eigenspectrum, the pairwise-cosine histogram (the same seeded pairs as for a
  model's vectors) and, when labels or pairs are given, the probes. **The probes read the vectors into memory**
  (scikit-learn fits need the matrix); without labels or pairs nothing is read whole.
* **Results** are ordinary :class:`~embedgeom.results.AnalysisResult` objects: pooling ``"precomputed"``, layer 0;
  ``checkpoint`` records the file's path, sha256, shape and dtype. Saved with ``save_embeddings`` (the default)
  the vectors are copied into the result, which ``compare`` needs; pass ``save_embeddings=False`` for large files.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import metrics as M
from .data import TextSet
from .devices import resolve_device
from .measure import HIST_BINS, HIST_PAIRS, HIST_RANGE, Collected
from .measure_streamed import measure_source
from .metrics.tiled import DEFAULT_BLOCK, RowSource
from .options import AnalysisOptions, resolve_options
from .progress import Progress, emit
from .results import AnalysisResult, array_key, reproducibility_card

VECTOR_SUFFIXES: tuple[str, ...] = (".npy", ".safetensors", ".parquet")
#: The pooling and layer name precomputed vectors are recorded under.
PRECOMPUTED = "precomputed"
#: Analysis options that describe how a model embeds texts, so do not apply to vectors that already exist (recorded
#: under ``options["not_applicable"]``; the CLI passes the others on).
NOT_APPLICABLE: tuple[str, ...] = ("data", "poolings", "layers", "dtype", "batch_size", "max_length",
                                   "special_tokens", "cache", "glue_dir", "max_texts", "prompt", "spill")
#: Pairs with a score at or above this quantile are the positives of a scored pair file.
POSITIVE_QUANTILE = 0.8


@dataclass(frozen=True)
class VectorFile:
    """An opened embeddings file: its rows as a :class:`RowSource` and what identifies it."""

    path: Path
    n: int
    d: int
    dtype: str
    key: str | None
    source: RowSource

    def card(self) -> dict[str, Any]:
        return {"spec": str(self.path), "path": str(self.path), "kind": PRECOMPUTED, "format": self.path.suffix[1:],
                "key": self.key, "n": self.n, "hidden_size": self.d, "dtype": self.dtype,
                "content_hash": file_sha256(self.path), "num_layers": 0}


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _float_rows(dtype: Any, path: Path, what: str) -> None:
    if np.dtype(dtype).kind != "f":
        raise ValueError(f"embeddings: expected floating-point vectors in {path}, got {what} of dtype "
                         f"{np.dtype(dtype)}. Save the vectors as float32 (e.g. np.save(path, x.astype('float32'))).")


def _as_float(block: np.ndarray) -> np.ndarray:
    return block.astype(np.float32) if block.dtype == np.float16 else block


def _npy(path: Path) -> VectorFile:
    try:
        x = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as err:
        raise ValueError(f"embeddings: {path} is not a readable .npy array ({err}). Save it with numpy.save.") from None
    if x.ndim != 2:
        raise ValueError(f"embeddings: expected an (n, d) array in {path}, got shape {x.shape}. Reshape to one "
                         "row per item.")
    _float_rows(x.dtype, path, "an array")
    src = RowSource(int(x.shape[0]), int(x.shape[1]), lambda a, b: _as_float(np.array(x[a:b])),
                    lambda idx: _as_float(np.asarray(x[idx])))
    return VectorFile(path, src.n, src.d, str(x.dtype), None, src)


def _safetensors(path: Path, key: str | None) -> VectorFile:
    from safetensors import safe_open

    try:
        f = safe_open(str(path), framework="np")
    except Exception as err:  # safetensors raises its own error types for a malformed header
        raise ValueError(f"embeddings: {path} is not a readable safetensors file ({err}).") from None
    keys = list(f.keys())
    if key is None:
        two_d = [k for k in keys if len(f.get_slice(k).get_shape()) == 2]
        if len(two_d) != 1:
            raise ValueError(f"embeddings: expected one 2-D tensor in {path}, found {len(two_d)} ({', '.join(two_d)})"
                             f". Name one with {path.name}?key=NAME (--embeddings-key NAME).")
        key = two_d[0]
    if key not in keys:
        raise ValueError(f"key: expected one of the tensors in {path} ({', '.join(keys)}), got {key!r}.")
    sl = f.get_slice(key)
    shape = sl.get_shape()
    if len(shape) != 2:
        raise ValueError(f"embeddings: expected a 2-D tensor {key!r} in {path}, got shape {tuple(shape)}.")
    dtype = {"F16": "float16", "F32": "float32", "F64": "float64"}.get(sl.get_dtype())
    if dtype is None:
        raise ValueError(f"embeddings: expected floating-point vectors in {path} ({key!r}), got dtype "
                         f"{sl.get_dtype()}. Save them as float32.")
    src = RowSource(int(shape[0]), int(shape[1]), lambda a, b: _as_float(np.asarray(sl[a:b])),
                    lambda idx: _as_float(np.stack([np.asarray(sl[int(i):int(i) + 1])[0] for i in idx])
                                          if len(idx) else np.zeros((0, shape[1]), np.float32)))
    return VectorFile(path, src.n, src.d, dtype, key, src)


class _ParquetRows:
    """Rows of one fixed-length list column, read a row group at a time (the last group read is kept)."""

    def __init__(self, path: Path, key: str | None) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            self.file = pq.ParquetFile(path)
        except Exception as err:  # pyarrow raises ArrowInvalid and friends for a malformed file
            raise ValueError(f"embeddings: {path} is not a readable parquet file ({err}).") from None
        schema = self.file.schema_arrow
        lists = [f.name for f in schema if pa.types.is_list(f.type) or pa.types.is_fixed_size_list(f.type)
                 or pa.types.is_large_list(f.type)]
        if key is None:
            if len(lists) != 1:
                raise ValueError(f"embeddings: expected one list column of vectors in {path}, found {len(lists)} "
                                 f"({', '.join(lists)}). Name one with --embeddings-key NAME.")
            key = lists[0]
        if key not in lists:
            raise ValueError(f"key: expected one of the vector columns in {path} ({', '.join(lists)}), got {key!r}.")
        self.key = key
        meta = self.file.metadata
        self.starts = np.cumsum([0] + [meta.row_group(i).num_rows for i in range(meta.num_row_groups)])
        self.n = int(self.starts[-1])
        self._cached: tuple[int, np.ndarray] | None = None
        first = self._group(0) if self.n else np.zeros((0, 0), np.float32)
        self.d = int(first.shape[1])
        self.dtype = str(first.dtype)
        _float_rows(first.dtype, path, f"column {key!r}")

    def _group(self, g: int) -> np.ndarray:
        if self._cached is not None and self._cached[0] == g:
            return self._cached[1]
        col = self.file.read_row_group(g, columns=[self.key]).column(0).combine_chunks()
        lengths = np.unique(col.value_lengths().to_numpy(zero_copy_only=False))
        if len(lengths) != 1 or col.null_count:
            raise ValueError(f"embeddings: expected vectors of one length in column {self.key!r}, got lengths "
                             f"{lengths.tolist()[:5]} (or nulls). Every row needs a vector of the same size.")
        rows = col.flatten().to_numpy(zero_copy_only=False).reshape(len(col), int(lengths[0]))
        self._cached = (g, rows)
        return rows

    def read(self, a: int, b: int) -> np.ndarray:
        parts = []
        g = int(np.searchsorted(self.starts, a, side="right") - 1)
        while a < b:
            rows = self._group(g)
            lo, hi = a - self.starts[g], min(b, self.starts[g + 1]) - self.starts[g]
            parts.append(rows[lo:hi])
            a = int(self.starts[g] + hi)
            g += 1
        return _as_float(np.concatenate(parts) if len(parts) != 1 else parts[0])

    def take(self, idx: np.ndarray) -> np.ndarray:
        return np.stack([self.read(int(i), int(i) + 1)[0] for i in idx]) if len(idx) else np.zeros((0, self.d))


def _parquet(path: Path, key: str | None) -> VectorFile:
    rows = _ParquetRows(path, key)
    return VectorFile(path, rows.n, rows.d, rows.dtype, rows.key, RowSource(rows.n, rows.d, rows.read, rows.take))


def open_vectors(path: str | os.PathLike, *, key: str | None = None) -> VectorFile:
    """An embeddings file (``.npy``, ``.safetensors`` or ``.parquet``; see the module docstring), opened for block
    reads. ``key``: the tensor (safetensors) or column (parquet) holding the vectors, when there are several."""
    if not isinstance(path, (str, os.PathLike)):
        raise ValueError(f"embeddings: expected a path to a {'/'.join(VECTOR_SUFFIXES)} file, got "
                         f"{type(path).__name__}. For an in-memory array use embedgeom.metrics directly.")
    p = Path(os.fspath(path)).expanduser()
    if p.suffix.lower() not in VECTOR_SUFFIXES:
        raise ValueError(f"embeddings: expected a {', '.join(VECTOR_SUFFIXES)} file, got {str(p)!r}. Save the "
                         "vectors with numpy.save (one row per item).")
    if not p.is_file():
        raise ValueError(f"embeddings: {p} does not exist or is not a file. Check the path.")
    if key is not None and (not isinstance(key, str) or not key):
        raise ValueError(f"key: expected a tensor or column name, got {key!r}.")
    suffix = p.suffix.lower()
    if suffix == ".npy":
        if key is not None:
            raise ValueError(f"key: a .npy file holds one array, got key={key!r}. Remove the key.")
        vf = _npy(p)
    elif suffix == ".safetensors":
        vf = _safetensors(p, key)
    else:
        vf = _parquet(p, key)
    if vf.n < 3:
        raise ValueError(f"embeddings: expected at least 3 vectors in {p}, got {vf.n}.")
    return vf


def _load_array(value: Any, what: str) -> np.ndarray:
    if isinstance(value, (str, os.PathLike)):
        p = Path(os.fspath(value)).expanduser()
        if not p.is_file():
            raise ValueError(f"{what}: {p} does not exist or is not a file. Check the path.")
        if p.suffix.lower() == ".npy":
            return np.load(p, allow_pickle=False)
        if p.suffix.lower() == ".txt" and what == "labels":
            lines = p.read_text(encoding="utf-8").splitlines()
            names = sorted(set(lines))
            index = {v: i for i, v in enumerate(names)}
            return np.asarray([index[v] for v in lines], dtype=np.int64)
        also = " or a .txt with one label per line" if what == "labels" else ""
        raise ValueError(f"{what}: expected a .npy file{also}, got {str(p)!r}.")
    return np.asarray(value)


def _structure(n: int, labels: Any, pairs: Any, scores: Any) -> dict[str, Any]:
    """The task's labels / pairs / pair scores / positives, validated against n rows."""
    out: dict[str, Any] = {}
    if labels is not None:
        lab = _load_array(labels, "labels")
        if lab.ndim != 1 or len(lab) != n:
            raise ValueError(f"labels: expected one label per vector ({n}), got shape {lab.shape}. Give row i's "
                             "class as labels[i].")
        if lab.dtype.kind == "f":  # scores: a regression target (ridge probe), never one class per value
            if not np.isfinite(lab).all():
                raise ValueError("labels: expected finite scores, got NaN or infinity. Drop or fill those rows.")
            out["labels"], out["label_task"] = lab.astype(np.float64), "regression"
        elif lab.dtype.kind in "iu":
            out["labels"], out["label_task"] = lab.astype(np.int64), "classification"
        else:
            raise ValueError(f"labels: expected integer class ids or float scores, got dtype {lab.dtype}. Convert "
                             "classes to integers (or give a .txt file with one label per line).")
    if scores is not None and pairs is None:
        raise ValueError("scores: expected pairs as well (one score per pair). Pass --pairs FILE.npy.")
    if pairs is not None:
        pr = _load_array(pairs, "pairs")
        if pr.ndim != 2 or pr.shape[1] != 2 or pr.dtype.kind not in "iu" or len(pr) < 1:
            raise ValueError(f"pairs: expected an (m, 2) integer array of row indices, got shape {pr.shape} and "
                             f"dtype {pr.dtype}.")
        if pr.min() < 0 or pr.max() >= n or (pr[:, 0] == pr[:, 1]).any():
            raise ValueError(f"pairs: expected row indices of two different vectors in [0, {n}), got values in "
                             f"[{pr.min()}, {pr.max()}] (or a row paired with itself).")
        pr = pr.astype(np.int64)
        if scores is None:
            out["positives"], out["positive_rule"] = pr, "every given pair"
        else:
            sc = _load_array(scores, "scores").astype(np.float64)
            if sc.shape != (len(pr),) or not np.isfinite(sc).all():
                raise ValueError(f"scores: expected {len(pr)} finite scores (one per pair), got shape {sc.shape}.")
            thr = float(np.quantile(sc, POSITIVE_QUANTILE))
            out.update(pairs=pr, pair_labels=sc, pair_task="regression", positives=pr[sc >= thr],
                       positive_rule=f"pairs with score >= {thr:g} (the {POSITIVE_QUANTILE:.0%} quantile)")
    return out


def analyze_embeddings(
    embeddings: str | os.PathLike,
    *,
    labels: Any = None,
    pairs: Any = None,
    scores: Any = None,
    key: str | None = None,
    name: str | None = None,
    options: AnalysisOptions | None = None,
    progress: Progress | None = None,
    block: int = DEFAULT_BLOCK,
    distributed: bool = False,
    **kwargs: Any,
) -> AnalysisResult | None:
    """Analyse precomputed vectors (see the module docstring): the metrics, alignment, spectrum and histogram of
    :func:`embedgeom.analyze`, computed block by block, plus the probes when ``labels`` or ``pairs`` are given.

    ``labels`` / ``pairs`` / ``scores``: arrays or ``.npy`` paths (labels also ``.txt``). ``options`` / keyword
    options as :func:`embedgeom.analyze` takes them; model options (poolings, layers, data, device, dtype,
    max_length, batch size, cache) do not apply and are recorded as such. ``block``: rows per block.
    ``distributed``: under torchrun, share the metric work across the ranks (every rank passes the same file);
    rank 0 runs the probes and gets the result, the other ranks get None.
    """
    cfg = resolve_options(options, None, kwargs)
    if cfg.protocol != "default":
        raise ValueError(f"protocol: precomputed embeddings are analysed with the default protocol, got "
                         f"{cfg.protocol!r} (the reference protocol embeds texts itself). Remove --protocol.")
    if cfg.max_texts is not None:
        raise ValueError("max_texts: does not apply to precomputed embeddings (every row is measured). Subsample "
                         "the file instead.")
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise ValueError(f"name: expected a non-empty label, got {name!r}. Omit it to use the file's name.")
    emit(progress, "open embeddings", 0, 1)
    vf = open_vectors(embeddings, key=key)
    struct = _structure(vf.n, labels, pairs, scores)
    emit(progress, "open embeddings", 1, 1)
    task = vf.path.stem
    ts = TextSet(str(vf.path), task, ("",) * vf.n, f"precomputed vectors from {vf.path.name}", **struct)
    out = Collected()
    card = {k: v for k, v in ts.card().items() if k != "n_texts"}
    out.tasks[task] = {**card, "items": "vectors (rows matched by index)", "n_items": vf.n,
                       "encode": {"precomputed": True, "dtype": vf.dtype, "truncated": 0}}
    for what in ("labels", "pairs", "pair_labels", "positives"):
        val = getattr(ts, what)
        if val is not None:
            out.arrays[array_key("struct", task, what)] = np.asarray(val)
    from .distributed import current

    main = not distributed or current().main  # under torchrun the other ranks share the metrics, nothing else
    measure_source(task, ts, vf.source, PRECOMPUTED, 0, cfg, out, progress, block=block, distributed=distributed,
                   main=main, device=resolve_device(cfg.device))
    if not main:
        return None
    recorded = {**cfg.record(), "protocol": "default", "data": [str(vf.path)], "poolings": [PRECOMPUTED],
                "layers": [0], "input": "precomputed embeddings", "block_rows": block,
                **({"distributed": _group_record()} if distributed else {}),
                "not_applicable": list(NOT_APPLICABLE),
                "metric_definitions": {m: {"description": M.REGISTRY[m].description,
                                           "options": dict(M.REGISTRY[m].kwargs),
                                           "reference": M.REGISTRY[m].reference,
                                           "higher_is_better": M.REGISTRY[m].higher_is_better}
                                       for m in (*cfg.metrics, "alignment")},
                "histogram": {"bins": HIST_BINS, "range": HIST_RANGE, "pairs": HIST_PAIRS}}
    return AnalysisResult(vf.card(), out.tasks, recorded, out.metric_rows, out.probe_rows, out.arrays,
                          reproducibility_card(cfg.seed), name.strip() if name else "")


def _group_record() -> dict[str, Any]:
    from .distributed import backend, current

    return {"processes": current().world, "backend": backend()}
