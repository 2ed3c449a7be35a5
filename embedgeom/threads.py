"""How many CPU threads the work uses: torch's intra-op pool, and the BLAS and OpenMP pools that numpy, scipy and
scikit-learn use (through threadpoolctl, a scikit-learn dependency), set for the duration of a block and restored
after it.

A runtime setting: it changes how fast an analysis runs, not what it computes (the summation order of a parallel
reduction may move the last bits; a test finds every number of a tiny model identical at one and two threads), so it
is not an analysis option
(:class:`~embedgeom.options.AnalysisOptions` records what a number depends on and keys the embedding cache on it),
is not recorded in results and is not part of any cache key.

The default, ``"auto"`` (:func:`auto_threads`), is one thread per *usable* CPU (:func:`usable_cpus`: the process's
CPU affinity, capped by a container's cgroup CPU quota) that other work is not already keeping busy (the host's CPUs
minus its 1-minute load average), at least 1, for torch and for the BLAS / OpenMP pools alike. Why: a parallel
region of torch or OpenBLAS ends at a barrier that waits for its slowest thread, so when the pools have more threads
than the CPUs free to run them, every operation waits for a descheduled thread. Measured on a 2-core machine busy
with other work (load average 7-8): MiniLM ``analyze`` of 200 texts with probes took 11.1 s with one thread and
43.8-66.0 s with two (``tests/benchmarks/bench_compare.py --threads-study``, reports/benchmarks/compare_cpu.md).
``os.cpu_count()``, from which the pools size themselves when nothing is set,
counts the host's CPUs, not the container's.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

#: What ``threads="auto"`` (and the CLI's ``--threads auto``) means: one thread per usable CPU.
AUTO = "auto"

#: Where a cgroup CPU quota is read (v2, then v1); a missing file means no quota.
_CGROUP_V2 = Path("/sys/fs/cgroup/cpu.max")
_CGROUP_V1 = (Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"), Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us"))


def _cgroup_quota() -> float | None:
    """The cgroup CPU quota in CPUs (e.g. 2.5), or None when there is none or it cannot be read."""
    try:
        quota, period = _CGROUP_V2.read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us, period_us = (int(p.read_text()) for p in _CGROUP_V1)
        return quota_us / period_us if quota_us > 0 and period_us > 0 else None
    except (OSError, ValueError):
        return None


def usable_cpus() -> int:
    """The CPUs this process may run on: its CPU affinity (all CPUs where the OS has no affinity call), capped by
    a cgroup CPU quota rounded up (a container limited to 2.5 CPUs gets 3); at least 1."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        n = os.cpu_count() or 1
    quota = _cgroup_quota()
    if quota is not None:
        n = min(n, max(1, math.ceil(quota)))
    return max(1, n)


def auto_threads() -> int:
    """What ``"auto"`` means: :func:`usable_cpus`, less the CPUs other work keeps busy, at least 1:
    ``max(1, min(usable_cpus(), round(os.cpu_count() - load)))`` with ``load`` the host's 1-minute load average
    (where the OS reports none, :func:`usable_cpus`). Read once, when the work starts: a heavy computation run just
    before in the same process counts as other work."""
    usable = usable_cpus()
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # Windows, or no load average
        return usable
    return max(1, min(usable, round((os.cpu_count() or usable) - load)))


def check_threads(value: Any, option: str = "threads") -> int:
    """``"auto"`` (or None) -> :func:`auto_threads`; an integer >= 1 (or its decimal string, as the CLI passes it)
    as given. Anything else raises one ValueError naming ``option``."""
    if value is None or value == AUTO:
        return auto_threads()
    raw = value
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{option}: expected a positive integer or 'auto', got {raw!r}. Pass e.g. 4, or 'auto' "
                         f"(one thread per usable CPU not busy with other work: {auto_threads()} now).")
    return value


def current_threads() -> dict[str, int]:
    """The thread counts in force now: ``torch`` (intra-op) and, per pool threadpoolctl finds (``blas``,
    ``openmp``), the largest count among its libraries."""
    import torch
    from threadpoolctl import threadpool_info

    out = {"torch": torch.get_num_threads()}
    for lib in threadpool_info():
        api = lib["user_api"]
        out[api] = max(out.get(api, 0), int(lib["num_threads"]))
    return out


@contextmanager
def limit_threads(threads: int | str | None = AUTO) -> Iterator[int]:
    """Run a block with ``threads`` CPU threads (``"auto"``: see :func:`auto_threads`) in torch's
    intra-op pool (``torch.set_num_threads``) and in every BLAS / OpenMP pool loaded in the process
    (``threadpoolctl.threadpool_limits``: numpy's and scipy's OpenBLAS, scikit-learn's and torch's OpenMP);
    restores the previous counts on exit, also when the block raises. Yields the thread count used. Changes speed,
    not results (float rounding aside). Usage: ``with limit_threads(4): eg.analyze(...)``. torch's inter-op pool is
    left alone (it can be set only once per process, before any parallel work)."""
    import scipy.linalg  # noqa: F401  (loads scipy's BLAS and scikit-learn's OpenMP now, so that both are limited)
    import sklearn.utils._openmp_helpers  # noqa: F401
    import torch
    from threadpoolctl import threadpool_limits

    n = check_threads(threads)
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        with threadpool_limits(limits=n):
            yield n
    finally:
        torch.set_num_threads(before)
