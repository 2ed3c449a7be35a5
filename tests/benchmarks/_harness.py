"""Timing and reporting helpers shared by the benchmarks (not part of the test run)."""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

REPORTS = Path(__file__).resolve().parents[2] / "reports" / "benchmarks"


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def sync(device: str | torch.device | None = None) -> None:
    if torch.cuda.is_available() and (device is None or str(device).startswith("cuda")):
        torch.cuda.synchronize()


def timeit(fn: Callable[[], Any], *, repeat: int = 3, warmup: int = 1, device: str = "cpu"
           ) -> tuple[float, float, Any]:
    """(best seconds, median seconds, last result) over ``repeat`` timed calls after ``warmup`` calls."""
    out = None
    for _ in range(warmup):
        out = fn()
    sync(device)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return min(times), statistics.median(times), out


def _write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary sibling and a rename: a reader (or a kill) never sees half a
    file, so a report flushed after every part of a benchmark is always readable."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_report(name: str, payload: dict[str, Any], markdown: str, out_dir: str | os.PathLike | None = None
                 ) -> Path:
    """Write ``name.json`` (``payload`` plus the machine and the time) and ``name.md`` to ``out_dir`` (default
    reports/benchmarks/); returns the path of the markdown file. Safe to call repeatedly to flush partial results."""
    out = REPORTS if out_dir is None else Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    payload = {"machine": machine(), "measured": time.strftime("%Y-%m-%d %H:%M:%S"), **payload}
    _write_atomic(out / f"{name}.json", json.dumps(payload, indent=2, default=float) + "\n")
    path = out / f"{name}.md"
    _write_atomic(path, markdown.rstrip() + "\n")
    return path
