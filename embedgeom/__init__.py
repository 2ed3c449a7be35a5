"""embedgeom: the geometry of text-encoder embedding spaces.

``embedgeom.metrics`` is importable on its own (numpy + torch only). The checkpoint-facing API
(``load_encoder``, ``encode``, ``analyze``, ``compare``, ``AnalysisResult``) is imported lazily, on first use,
so ``import embedgeom`` stays fast and does not pull in transformers.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "load_encoder": "embedgeom.loading",
    "Encoder": "embedgeom.loading",
    "encode": "embedgeom.encoding",
    "Embeddings": "embedgeom.encoding",
    "analyze": "embedgeom.analysis",
    "compare": "embedgeom.comparison",
    "analyze_checkpoints": "embedgeom.analysis",
    "compare_groups": "embedgeom.seed_groups",
    "AnalysisOptions": "embedgeom.options",
    "AnalysisResult": "embedgeom.results",
    "ComparisonResult": "embedgeom.results",
    "load_texts": "embedgeom.data",
    "token_geometry": "embedgeom.tokens",
    "TokenOptions": "embedgeom.tokens",
    "TokenGeometryResult": "embedgeom.token_results",
    "compare_tokens": "embedgeom.token_results",
    "analyze_embeddings": "embedgeom.vectors",
    "models_table": "embedgeom.comparison",
}

__all__ = ["__version__", "metrics", "plot", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in ("metrics", "plot"):
        return importlib.import_module(f"embedgeom.{name}")
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'embedgeom' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
