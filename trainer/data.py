"""Tokenise a corpus once into packed fixed-length rows (memmaps), with document boundaries; sample batches.

Packing (deterministic, no randomness): documents are tokenised without special tokens (in parallel, by the Rust
tokenizer's ``encode_batch``) and laid into rows of ``seq_len`` tokens. Each document piece becomes a *segment*
``[CLS] piece [SEP]``; a row holds as many segments as fit, a document longer than the space left continues as a
new segment (and so a new ``[CLS]``) — in the same row if at least ``min_piece`` of its tokens fit, else in the
next row, the rest of the current row being padding. Beside the token ids a parallel ``uint8`` array records each
position's segment number within its row (1, 2, ...; 0 = padding). The model attends only within a segment and
positions restart at 0 in every segment (:func:`trainer.model.packed_inputs`), so a packed segment is encoded
exactly as the same text alone — packing removes padding without mixing documents.

Held-out split: document ``i`` (0-based, corpus order) is held out when ``i % round(1 / holdout) == 0``.

Cache: ``<cache>/data/<key>/`` with ``train.tokens.bin``, ``train.segments.bin``, ``heldout.*`` and ``meta.json``,
keyed by the corpus digest, the tokenizer digest, ``seq_len``, ``holdout``, ``min_piece`` and the packing
version; built in a temporary directory and renamed, under a file lock (ranks of one job build it once).

Batch order: the training rows are visited in a fresh permutation every epoch, ``np.random.default_rng([seed,
epoch])``; step ``s`` takes global rows ``s * B .. (s + 1) * B - 1`` of that endless sequence, so the data
position is a pure function of the step (resume needs only the step).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import TrainerError, fail

PACKING_VERSION = 1
DATA_FORMAT = "embedgeom-trainer-data"
_ENCODE_CHUNK = 256
_MAX_SEGMENTS = 255


@dataclass(frozen=True)
class SplitStats:
    rows: int
    tokens: int  # content tokens (without [CLS]/[SEP]/padding)
    documents: int
    segments: int


class RowPacker:
    """Greedy sequential packer (see the module docstring). ``add`` documents, then ``finish``; rows are
    handed to ``sink(tokens_row, segments_row)`` as they complete."""

    def __init__(self, seq_len: int, *, cls_id: int, sep_id: int, pad_id: int, min_piece: int, sink: Any):
        self.seq_len, self.cls_id, self.sep_id, self.pad_id = seq_len, cls_id, sep_id, pad_id
        self.min_piece, self.sink = min_piece, sink
        self._tokens: list[int] = []
        self._segments: list[int] = []
        self.rows = self.tokens = self.documents = self.segments = 0

    def _flush(self) -> None:
        if not self._tokens:
            return
        pad = self.seq_len - len(self._tokens)
        self.sink(np.asarray(self._tokens + [self.pad_id] * pad), np.asarray(self._segments + [0] * pad))
        self._tokens, self._segments = [], []
        self.rows += 1

    def add(self, ids: list[int] | np.ndarray) -> None:
        ids = list(ids)
        if not ids:
            return
        self.documents += 1
        self.tokens += len(ids)
        pos = 0
        while pos < len(ids):
            space = self.seq_len - len(self._tokens) - 2
            left = len(ids) - pos
            seg_no = self._segments[-1] + 1 if self._segments else 1
            if space < 1 or (left > space and space < self.min_piece) or seg_no > _MAX_SEGMENTS:
                self._flush()
                continue
            take = min(left, space)
            self._tokens += [self.cls_id, *ids[pos:pos + take], self.sep_id]
            self._segments += [seg_no] * (take + 2)
            self.segments += 1
            pos += take
            if len(self._tokens) >= self.seq_len - 2:
                self._flush()

    def finish(self) -> SplitStats:
        self._flush()
        return SplitStats(self.rows, self.tokens, self.documents, self.segments)


class _BinWriter:
    def __init__(self, path: Path, dtype: np.dtype):
        self.fh = open(path, "wb")  # noqa: SIM115 (closed by pack_corpus)
        self.dtype = dtype

    def write(self, row: np.ndarray) -> None:
        self.fh.write(row.astype(self.dtype, copy=False).tobytes())

    def close(self) -> None:
        self.fh.close()


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= np.iinfo(np.uint16).max + 1 else np.dtype(np.int32)


def _chunks(docs: Iterable[str], n: int) -> Iterator[list[str]]:
    buf: list[str] = []
    for d in docs:
        buf.append(d)
        if len(buf) == n:
            yield buf
            buf = []
    if buf:
        yield buf


def holdout_every(holdout: float) -> int:
    """Document ``i`` is held out when ``i % holdout_every(holdout) == 0``."""
    return max(2, round(1.0 / holdout))


def pack_corpus(documents: Iterable[str], encoder: Any, directory: Path, *, seq_len: int, cls_id: int, sep_id: int,
                pad_id: int, vocab_size: int, holdout: float, min_piece: int) -> dict[str, SplitStats]:
    """Tokenise ``documents`` with ``encoder`` (a ``tokenizers.Tokenizer``) and write both splits' binary files
    into ``directory``. Returns the per-split statistics."""
    dtype = token_dtype(vocab_size)
    every = holdout_every(holdout)
    writers, packers = {}, {}
    for split in ("train", "heldout"):
        tw = _BinWriter(directory / f"{split}.tokens.bin", dtype)
        sw = _BinWriter(directory / f"{split}.segments.bin", np.dtype(np.uint8))
        writers[split] = (tw, sw)

        def sink(t: np.ndarray, s: np.ndarray, tw: _BinWriter = tw, sw: _BinWriter = sw) -> None:
            tw.write(t)
            sw.write(s)

        packers[split] = RowPacker(seq_len, cls_id=cls_id, sep_id=sep_id, pad_id=pad_id, min_piece=min_piece,
                                   sink=sink)
    index = 0
    try:
        for chunk in _chunks(documents, _ENCODE_CHUNK):
            for enc in encoder.encode_batch(chunk, add_special_tokens=False):
                split = "heldout" if index % every == 0 else "train"
                packers[split].add(enc.ids)
                index += 1
        return {split: p.finish() for split, p in packers.items()}
    finally:
        for tw, sw in writers.values():
            tw.close()
            sw.close()


@dataclass(frozen=True)
class PackedSplit:
    """One split's rows: ``tokens[i]`` and ``segments[i]`` are ``seq_len`` long (memmaps, read-only)."""

    tokens: np.ndarray
    segments: np.ndarray
    stats: SplitStats

    @property
    def rows(self) -> int:
        return int(self.tokens.shape[0])

    def take(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(token ids as int64, segment numbers as uint8) of the given rows, in that order."""
        return self.tokens[rows].astype(np.int64), np.asarray(self.segments[rows])


@dataclass(frozen=True)
class PackedData:
    train: PackedSplit
    heldout: PackedSplit
    directory: Path
    meta: dict[str, Any]


def data_key(*, corpus_digest: str, tokenizer_digest: str, seq_len: int, holdout: float, min_piece: int) -> str:
    text = f"v{PACKING_VERSION}|{corpus_digest}|{tokenizer_digest}|{seq_len}|{holdout!r}|{min_piece}"
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _open_split(directory: Path, split: str, meta: dict[str, Any]) -> PackedSplit:
    info = meta["splits"][split]
    rows, seq_len = info["rows"], meta["seq_len"]
    stats = SplitStats(info["rows"], info["tokens"], info["documents"], info["segments"])
    if rows == 0:
        empty_t = np.zeros((0, seq_len), dtype=np.dtype(meta["dtype"]))
        return PackedSplit(empty_t, np.zeros((0, seq_len), dtype=np.uint8), stats)
    tokens = np.memmap(directory / f"{split}.tokens.bin", dtype=np.dtype(meta["dtype"]), mode="r",
                       shape=(rows, seq_len))
    segments = np.memmap(directory / f"{split}.segments.bin", dtype=np.uint8, mode="r", shape=(rows, seq_len))
    return PackedSplit(tokens, segments, stats)


def open_packed(directory: Path) -> PackedData:
    meta = json.loads((directory / "meta.json").read_text())
    if meta.get("format") != DATA_FORMAT:
        raise TrainerError(f"data cache {directory}: not a trainer data directory; delete it to rebuild.")
    return PackedData(_open_split(directory, "train", meta), _open_split(directory, "heldout", meta), directory, meta)


def prepare_data(documents: Any, encoder: Any, cache_dir: Path, *, corpus_spec: str, corpus_digest: str,
                 tokenizer_digest: str, seq_len: int, cls_id: int, sep_id: int, pad_id: int, vocab_size: int,
                 holdout: float, min_piece: int) -> PackedData:
    """Return the packed corpus, building it on the first call (``documents`` is a zero-argument callable
    returning the document iterator; it is only called on a cache miss)."""
    from filelock import FileLock

    key = data_key(corpus_digest=corpus_digest, tokenizer_digest=tokenizer_digest, seq_len=seq_len,
                   holdout=holdout, min_piece=min_piece)
    base = cache_dir / "data"
    try:
        base.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise fail("data.cache_dir", "a writable directory", f"{str(base)!r} ({err.strerror})",
                   "Set data.cache_dir or $EMBEDGEOM_CACHE to a writable place.") from None
    final = base / key
    with FileLock(str(base / f"{key}.lock")):
        if (final / "meta.json").is_file():
            return open_packed(final)
        tmp = base / f".{key}.{os.getpid()}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            t0 = time.perf_counter()
            stats = pack_corpus(documents(), encoder, tmp, seq_len=seq_len, cls_id=cls_id, sep_id=sep_id,
                                pad_id=pad_id, vocab_size=vocab_size, holdout=holdout, min_piece=min_piece)
            meta = {
                "format": DATA_FORMAT, "version": PACKING_VERSION, "seq_len": seq_len,
                "dtype": token_dtype(vocab_size).name, "corpus": corpus_spec, "corpus_digest": corpus_digest,
                "tokenizer_digest": tokenizer_digest, "holdout": holdout, "min_piece": min_piece,
                "special": {"cls": cls_id, "sep": sep_id, "pad": pad_id},
                "splits": {k: vars(v) for k, v in stats.items()},
                "seconds": round(time.perf_counter() - t0, 3),
            }
            (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return open_packed(final)


def check_sizes(data: PackedData, *, corpus: str, batch_size: int, seq_len: int) -> None:
    """TrainerError when the training split cannot fill one batch of distinct rows or nothing is held out."""
    train, held = data.train.stats, data.heldout.stats
    total = train.tokens + held.tokens
    need = batch_size * (seq_len - 2)
    if train.rows < batch_size or held.rows < 1:
        what = (f"{total:,} tokens in {train.documents + held.documents:,} documents after tokenisation "
                f"({train.tokens:,} tokens / {train.rows:,} rows for training, {held.tokens:,} held out)")
        raise fail("corpus", f"at least {need:,} training tokens (one batch of train.batch_size {batch_size} rows x "
                   f"{seq_len - 2} tokens) plus at least one held-out document",
                   f"{corpus!r} with {what}",
                   "Use a larger corpus, or lower train.batch_size / data.seq_len.")


class RowSampler:
    """Global row indices for each optimizer step (see the module docstring)."""

    def __init__(self, n_rows: int, *, global_batch: int, seed: int):
        if n_rows < 1:
            raise fail("training split", "at least one row", "0 rows", "Use a larger corpus.")
        self.n, self.global_batch, self.seed = n_rows, global_batch, seed
        self._perms: dict[int, np.ndarray] = {}

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            if len(self._perms) > 2:
                self._perms.pop(min(self._perms))
            self._perms[epoch] = np.random.default_rng([self.seed, epoch]).permutation(self.n)
        return self._perms[epoch]

    def rows_for_step(self, step: int) -> np.ndarray:
        g = np.arange(step * self.global_batch, (step + 1) * self.global_batch, dtype=np.int64)
        epochs, pos = np.divmod(g, self.n)
        out = np.empty_like(g)
        for e in np.unique(epochs):
            sel = epochs == e
            out[sel] = self._perm(int(e))[pos[sel]]
        return out

    def epoch(self, step: int) -> float:
        """Epochs completed after ``step`` optimizer steps (fractional)."""
        return step * self.global_batch / self.n
