"""The one device resolver of embedgeom and its trainer (torch only; no model code)."""

from __future__ import annotations

import torch


def _mps_available() -> bool:
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def resolve_device(device: str | torch.device) -> torch.device:
    """``auto`` -> ``cuda`` when torch sees a GPU, else ``mps`` when available, else ``cpu``; ``cpu``, ``cuda``,
    ``cuda:N`` and ``mps`` as given, each only when available. Anything else (``meta``, a typo, a non-string) is
    refused with one ValueError naming the accepted values; a ``torch.device`` is checked like its string."""
    bad = ValueError(f"device: expected 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}.")
    if isinstance(device, torch.device):
        device = str(device)
    if not isinstance(device, str):
        raise bad
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise bad from None
    if dev.type not in ("cpu", "cuda", "mps"):
        raise bad
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: expected a CUDA device, got none available. Use --device cpu or auto.")
    if dev.type == "mps" and not _mps_available():
        raise ValueError("device: expected an MPS device, got none available. Use --device cpu or auto.")
    return dev
