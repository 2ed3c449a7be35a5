"""Is the Hugging Face hub reachable? Checked once per process, quickly, before any online attempt
(hub clients otherwise retry for tens of seconds on a machine without network)."""

from __future__ import annotations

import os
import socket
from functools import lru_cache


def offline_requested() -> bool:
    return any(os.environ.get(v, "0").lower() in ("1", "true", "yes")
               for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"))


@lru_cache(maxsize=1)
def hub_reachable(host: str = "huggingface.co", timeout: float = 3.0) -> bool:
    if offline_requested():
        return False
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False
