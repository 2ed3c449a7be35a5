"""The same analysis sharded over processes started by ``torchrun`` (torch.distributed; gloo on CPU, NCCL on GPU).

``torchrun --nproc-per-node K -m embedgeom analyze CKPT ...`` (or ``--embeddings FILE``): torchrun sets RANK,
WORLD_SIZE and the rendezvous; embedgeom joins the process group (gloo for CPU tensors, NCCL for CUDA tensors when
every rank of a node has a GPU of its own; ranks share GPUs, over gloo, when there are fewer) and

* **models**: each rank encodes a contiguous shard of every task's texts (rank r: items ``[r n / K, (r + 1) n /
  K)``) and writes its vectors to a spill directory all ranks share; every rank then reads the whole set from the
  spill files in row blocks;
* **metrics**: blocks are dealt round-robin to ranks; group moments are gathered and merged in rank order, exact
  uniformity's block pairs are split across ranks and their float64 sums all-reduced
  (:mod:`embedgeom.metrics.tiled`), so every metric equals the single-process value to float64 rounding of the
  merge order (and float32 rounding of different batch shapes in the forward pass);
* **probes, alignment, histogram, saving and printing**: rank 0 only (the probes read the set into memory there).

The spill directory is ``$EMBEDGEOM_SPILL_DIR`` (default: the system temporary directory), chosen by rank 0 and
sent to the others; on several nodes point it at a file system every node mounts. Several nodes work through
torchrun's own rendezvous (``--nnodes N --rdzv-backend c10d --rdzv-endpoint HOST:PORT``); embedgeom adds no
launcher of its own.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

#: Environment variable naming where ranks spill their vectors (shared by every rank).
SPILL_ENV = "EMBEDGEOM_SPILL_DIR"


def launched() -> bool:
    """Whether this process was started by torchrun (or another torch.distributed launcher) with several ranks."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1
    except ValueError:
        return False


@dataclass(frozen=True)
class Ranks:
    """This process's place in the group."""

    rank: int
    world: int

    @property
    def main(self) -> bool:
        return self.rank == 0

    def shard(self, n: int) -> tuple[int, int]:
        """This rank's contiguous share ``[a, b)`` of ``n`` items."""
        return self.rank * n // self.world, (self.rank + 1) * n // self.world


def current() -> Ranks:
    """The initialised group's rank and size (0 of 1 when not distributed)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return Ranks(dist.get_rank(), dist.get_world_size())
    return Ranks(0, 1)


@contextlib.contextmanager
def process_group(device: str = "auto") -> Iterator[Ranks]:
    """Join the torchrun process group for the duration (NCCL when this rank uses CUDA, gloo otherwise); leave it
    after. Not launched by torchrun: a group of one, nothing initialised."""
    import torch
    import torch.distributed as dist

    if not launched() or (dist.is_available() and dist.is_initialized()):
        yield current()
        return
    if not dist.is_available():
        raise RuntimeError("torch.distributed is not available in this torch build; install a torch with "
                           "distributed support, or run without torchrun.")
    cuda = device != "cpu" and torch.cuda.is_available()
    nccl = False
    if cuda:  # each rank on its own GPU; with fewer GPUs than ranks on this node, ranks share them
        count = torch.cuda.device_count()
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")) % count)
        nccl = count >= int(os.environ.get("LOCAL_WORLD_SIZE", "1"))  # NCCL needs one GPU per rank
    # CPU tensors (moments, per-row sums) go through gloo; CUDA tensors through NCCL when every rank has a GPU
    dist.init_process_group(backend="cpu:gloo,cuda:nccl" if nccl else "gloo")
    try:
        yield current()
    finally:
        dist.destroy_process_group()


def barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def broadcast(value: Any) -> Any:
    """Rank 0's ``value`` on every rank."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(value: Any) -> list[Any]:
    """Every rank's ``value``, in rank order, on every rank."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return [value]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, value)
    return out


@contextlib.contextmanager
def spill_dir() -> Iterator[Path]:
    """A fresh directory every rank shares (made by rank 0, removed by it after every rank is done)."""
    ranks = current()
    path = None
    if ranks.main:
        root = os.environ.get(SPILL_ENV) or None
        path = tempfile.mkdtemp(prefix="embedgeom-spill-", dir=root)
    path = broadcast(path)
    try:
        yield Path(path)
    finally:
        barrier()
        if ranks.main:
            shutil.rmtree(path, ignore_errors=True)


class SpilledRows:
    """The rows of every rank's spill file for one (task, pooling, layer), in rank order, read as one set."""

    def __init__(self, paths: list[Path]) -> None:
        self.parts = [np.load(p, mmap_mode="r") for p in paths]
        self.starts = np.cumsum([0] + [len(p) for p in self.parts])
        self.n = int(self.starts[-1])
        self.d = int(self.parts[0].shape[1])

    def read(self, a: int, b: int) -> np.ndarray:
        out = []
        for k, part in enumerate(self.parts):
            lo, hi = max(a, self.starts[k]), min(b, self.starts[k + 1])
            if lo < hi:
                out.append(np.asarray(part[lo - self.starts[k] : hi - self.starts[k]]))
        return np.concatenate(out) if len(out) != 1 else out[0]

    def take(self, idx: np.ndarray) -> np.ndarray:
        idx = np.asarray(idx, dtype=np.int64)
        part = np.searchsorted(self.starts, idx, side="right") - 1
        out = np.empty((len(idx), self.d), dtype=self.parts[0].dtype)
        for k in np.unique(part):
            sel = part == k
            out[sel] = self.parts[k][idx[sel] - self.starts[k]]
        return out


def analyze_spilled(checkpoint: Any, cfg: Any, progress: Any, name: str | None) -> Any:
    """:func:`embedgeom.analyze` (default protocol) with every task's vectors spilled to disk and measured in row
    blocks: under torchrun the texts are sharded over the ranks (see the module docstring); in one process with
    ``spill=N`` the texts are encoded N at a time. Returns the AnalysisResult on rank 0 and None on the others."""
    import warnings

    from .analysis import _encoder, _load_text_sets, _options, _rewarn, poolings_for_model
    from .measure import Collected
    from .measure_streamed import measure_source
    from .metrics.tiled import RowSource
    from .results import AnalysisResult, array_key, reproducibility_card
    from .storage import unique_name

    ranks = current()
    show = progress if ranks.main else None
    text_sets = _load_text_sets(cfg, show)
    for ts in text_sets:
        if ts.n < ranks.world:
            raise ValueError(f"data: {ts.spec} has {ts.n} items, fewer than the {ranks.world} processes. Launch "
                             "fewer processes (torchrun --nproc-per-node) or analyse more texts.")
    enc = _encoder(checkpoint, cfg)
    cfg = poolings_for_model(cfg, enc)
    out = Collected()
    used: set[str] = set()
    with spill_dir() as spill:
        for t_i, (spec, ts) in enumerate(zip(cfg.data, text_sets, strict=True)):
            task = unique_name(ts.name, used)
            a, b = ranks.shard(ts.n)
            texts = list(ts.texts[a:b])
            tick = None if show is None else (lambda d, t, s=spec: show(f"encode {s}", d, t))
            prefix = spill / f"{t_i}-rank{ranks.rank}"
            keys, meta, dtypes, caught = _encode_to_spill(enc, texts, cfg, prefix, tick)
            every = gather(sorted(dtypes))
            precision_note = None
            if len({d for ds in every for d in ds}) > 1:  # one result never mixes precisions: all float32
                if dtypes != {"float32"}:
                    keys, meta, dtypes, more = _encode_to_spill(_encoder(checkpoint, cfg.replace(dtype="float32")),
                                                                texts, cfg, prefix, tick)
                    caught += more
                precision_note = (f"the precision checks of the chunks or processes disagreed ({every}); every "
                                  "vector was encoded in float32")
            truncated = sum(gather(int(meta.get("truncated") or 0)))
            barrier()
            if ranks.main:
                _rewarn(caught, task, enc)
                if precision_note:
                    warnings.warn(f"{task}: {precision_note}.", UserWarning, stacklevel=2)
                out.tasks[task] = {**ts.card(), "items": "texts", "n_items": ts.n,
                                   "encode": {**{k: v for k, v in meta.items() if k != "model_spec"},
                                              "truncated": truncated, "n": ts.n,
                                              "spilled": {"processes": ranks.world, "chunk": cfg.spill,
                                                          "rows": "contiguous shards, in text order"},
                                              **({"precision_note": precision_note} if precision_note else {})}}
                for what in ("labels", "pairs", "pair_labels", "positives"):
                    val = getattr(ts, what)
                    if val is not None:
                        out.arrays[array_key("struct", task, what)] = np.asarray(val)
            for k_i, (pooling, layer) in enumerate(keys):
                rows = SpilledRows([spill / f"{t_i}-rank{r}-{k_i}.npy" for r in range(ranks.world)])
                measure_source(task, ts, RowSource(rows.n, rows.d, rows.read, rows.take), pooling, layer, cfg,
                               out, show, distributed=ranks.world > 1, main=ranks.main,
                               lexical=layer == enc.num_layers, device=enc.device)
                del rows
    if not ranks.main:
        return None
    recorded = {**_options(cfg), **({"distributed": {"processes": ranks.world, "backend": backend()}}
                                    if ranks.world > 1 else {})}
    return AnalysisResult(enc.card(), out.tasks, recorded, out.metric_rows, out.probe_rows, out.arrays,
                          reproducibility_card(cfg.seed), name.strip() if name else "")


def _encode_to_spill(enc: Any, texts: list[str], cfg: Any, prefix: Path, progress: Any
                     ) -> tuple[list[Any], dict[str, Any], set[str], list[Any]]:
    """Encode ``texts`` ``cfg.spill`` at a time (all at once without it) into one float32 ``.npy`` per vector set
    (``{prefix}-{k}.npy``, k = the set's index). Returns the sets' keys, the first chunk's meta with the truncation
    count of all, the dtypes used and the warnings caught."""
    import warnings

    from .encoding import encode

    n = len(texts)
    chunk = cfg.spill or n
    files: dict[Any, np.ndarray] = {}
    meta: dict[str, Any] = {}
    dtypes: set[str] = set()
    truncated = 0
    caught: list[Any] = []
    for c0 in range(0, n, chunk):
        part = texts[c0 : c0 + chunk]
        with warnings.catch_warnings(record=True) as got:
            warnings.simplefilter("always")
            emb = encode(enc, part, poolings=cfg.poolings, layers=cfg.layers, batch_size=cfg.batch_size,
                         max_length=cfg.max_length, special_tokens=cfg.special_tokens, cache=cfg.cache,
                         prompt=cfg.prompt,
                         progress=None if progress is None else (lambda d, t, c=c0: progress(c + d, n)))
        caught += got
        for k, (key, x) in enumerate(emb.vectors.items()):
            if key not in files:
                files[key] = np.lib.format.open_memmap(f"{prefix}-{k}.npy", mode="w+", dtype=np.float32,
                                                       shape=(n, x.shape[1]))
            files[key][c0 : c0 + len(part)] = x
        dtypes |= set(emb.meta.get("vector_dtypes", {}).values())
        truncated += int(emb.meta.get("truncated") or 0)
        meta = meta or dict(emb.meta)
    keys = list(files)
    for f in files.values():
        f.flush()
    files.clear()
    return keys, {**meta, "truncated": truncated}, dtypes, caught


def backend() -> str | None:
    import torch.distributed as dist

    return str(dist.get_backend()) if dist.is_available() and dist.is_initialized() else None
