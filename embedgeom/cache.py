"""Where embedgeom keeps derived files (cleaned samples, embeddings): one root, overridable."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """``$EMBEDGEOM_CACHE`` if set, else ``$XDG_CACHE_HOME/embedgeom``, else ``~/.cache/embedgeom``."""
    env = os.environ.get("EMBEDGEOM_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "embedgeom"


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to a unique temporary file beside ``path`` and rename it into place: readers never see a
    partial file, and concurrent writers (threads or processes) never share a temporary name."""
    import uuid

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
