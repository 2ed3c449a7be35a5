"""On-disk embedding cache: analyze -> compare -> report never re-encode the same texts.

One file per key, named by the sha256 of the key. :func:`embedgeom.encode` builds the key from everything that
changes a vector: the weights and config (content hash), the tokenizer (:func:`embedgeom.loading.
tokenizer_fingerprint`), a sentence-transformers checkpoint's Pooling/Dense/Normalize modules (for ``native``), the
texts and pairs, pooling, layer and layer count, max length, special-token and padding options, the precision the
vector was computed in (the compute dtype that produced it, whether ``auto`` checked it, and the float32 matmul
precision of the forward pass, which is always full IEEE float32), a custom pooler's fingerprint, the pooling
code's version (:data:`embedgeom.pooling.POOLING_VERSION`) and, where it is not 1, the registered pooler's own
version (``pooler_version``; a version-1 pooler's key has no such field, so the keys from before the pooler
registry still find their entries).

Files are written to a temporary name and atomically renamed, so concurrent writers and interrupted writes
never leave a partial file under the real name. Each file stores a checksum of its array; an entry that cannot
be read or does not verify (truncated, bit-flipped, not a zip) is a miss: it is removed, recomputed, and a
:class:`CacheWarning` says so once per cache directory. A cache that cannot be written (read-only, full disk)
never fails the computation: the vectors are returned and a warning says they were not stored.

:func:`cache_writes` turns every write under the cache root off for a block (``analyze(..., cache=False)``, the
command line's ``--no-cache``): no embeddings, cleaned samples or memoised hashes are written while it is off.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import uuid
import warnings
from collections.abc import Iterator
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import numpy as np

from .storage import cache_root

#: Bumped whenever the key's fields change, so entries written under an older, less complete key are never read.
#: 3: the float32 matmul precision entered the key (entries of version 2 may hold TF32 or bfloat16 matmuls where the
#: process allowed them for float32).
FORMAT_VERSION = 3
_warned: set[tuple[str, str]] = set()
_writes_enabled: ContextVar[bool] = ContextVar("embedgeom_cache_writes", default=True)


@contextlib.contextmanager
def cache_writes(enabled: bool) -> Iterator[None]:
    """Within the block, nothing is written under the cache root when ``enabled`` is False (embeddings, cleaned
    samples, memoised hashes); reads are unaffected. Restored on exit; per thread and task (a context variable)."""
    token = _writes_enabled.set(bool(enabled) and _writes_enabled.get())
    try:
        yield
    finally:
        _writes_enabled.reset(token)


def cache_writes_enabled() -> bool:
    """False inside a :func:`cache_writes` block that turned writes off."""
    return _writes_enabled.get()


class CacheWarning(UserWarning):
    """A cache entry was unreadable (and recomputed), or the cache could not be written."""


def _warn_once(root: Path, what: str, message: str) -> None:
    if (str(root), what) not in _warned:
        _warned.add((str(root), what))
        warnings.warn(message, CacheWarning, stacklevel=4)


def texts_hash(texts: list[str], pairs: list[str] | None = None) -> str:
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8", errors="surrogatepass"))
        h.update(b"\x00")
    if pairs is not None:
        h.update(b"\x01pairs\x01")
        for t in pairs:
            h.update(t.encode("utf-8", errors="surrogatepass"))
            h.update(b"\x00")
    return h.hexdigest()


class EmbeddingCache:
    """Directory of cached pooled embeddings (default: ``<cache root>/embeddings``)."""

    def __init__(self, root: str | os.PathLike | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else cache_root() / "embeddings"

    @staticmethod
    def key(fields: dict[str, Any]) -> str:
        return hashlib.sha256(json.dumps({"v": FORMAT_VERSION, **fields}, sort_keys=True).encode()).hexdigest()

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.npz"

    def get(self, key: str) -> np.ndarray | None:
        path = self._path(key)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as npz:
                arr = npz["vectors"]
                meta = json.loads(str(npz["meta"]))
            if meta.get("sha256") != hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest():
                raise ValueError("checksum mismatch")
            return arr
        except Exception as err:  # any unreadable entry (bad zip, CRC, truncation, bad JSON) is a miss
            with contextlib.suppress(OSError):
                path.unlink()
            _warn_once(self.root, "corrupt", f"embedding cache: an unreadable entry in {self.root} was removed and "
                       f"is being recomputed ({type(err).__name__}: {str(err)[:80]}).")
            return None

    def put(self, key: str, vectors: np.ndarray, meta: dict[str, Any]) -> Path | None:
        """Store ``vectors`` under ``key``; returns the file, or None (with a warning) if it could not be written, or
        None (silently) inside a :func:`cache_writes` block that turned writes off."""
        if not cache_writes_enabled():
            return None
        path = self._path(key)
        arr = np.ascontiguousarray(vectors, dtype=np.float32)
        full = {**meta, "sha256": hashlib.sha256(arr.tobytes()).hexdigest()}
        tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex}.tmp.npz")  # unique per writer, thread or process
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            np.savez(tmp, vectors=arr, meta=np.array(json.dumps(full, default=str)))
            os.replace(tmp, path)
        except OSError as err:
            _warn_once(self.root, "write", f"embedding cache: cannot write to {self.root} ({err.strerror or err}); "
                       "results are unaffected but will be recomputed next time. Pass --cache-dir or --no-cache.")
            return None
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()
        return path
