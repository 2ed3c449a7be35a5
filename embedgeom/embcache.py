"""On-disk embedding cache: analyze -> compare -> report never re-encode the same texts.

One file per (model content hash, texts hash, pooling, layer, max_length, compute dtype, token options),
named by the sha256 of that key. Files are written to a temporary name and atomically renamed, so
concurrent writers and interrupted writes never leave a partial file under the real name; each file
stores a checksum of its array and is treated as a miss (and removed) if it does not verify.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from .cache import cache_root

FORMAT_VERSION = 1


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
        except (OSError, ValueError, KeyError, EOFError):
            with contextlib.suppress(OSError):
                path.unlink()
            return None

    def put(self, key: str, vectors: np.ndarray, meta: dict[str, Any]) -> Path:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        arr = np.ascontiguousarray(vectors, dtype=np.float32)
        full = {**meta, "sha256": hashlib.sha256(arr.tobytes()).hexdigest()}
        tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex}.tmp.npz")  # unique per writer, thread or process
        try:
            np.savez(tmp, vectors=arr, meta=np.array(json.dumps(full)))
            os.replace(tmp, path)
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()
        return path
