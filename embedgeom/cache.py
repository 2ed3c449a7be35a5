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
