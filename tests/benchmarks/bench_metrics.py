"""Benchmark: exact uniformity vs the torch.pdist formulation (the reference study's code), and the
spectral path vs numpy/scikit-learn, side by side in one run.

    python tests/benchmarks/bench_metrics.py            # CPU part (n=10k, d=384)
    python tests/benchmarks/bench_metrics.py --gpu      # adds n=1M d=768 uniformity and 10M-row streaming
    python tests/benchmarks/bench_metrics.py --smoke --out DIR   # the --gpu code path on the CPU at toy sizes

Writes reports/benchmarks/metrics_<device>.{json,md} (``--out DIR``: there instead; ``--smoke`` without ``--out``
prints the numbers only). The report is rewritten after every part, so a run stopped early keeps what it measured
(``"complete": false``).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from embedgeom import metrics as M
from tests.benchmarks._harness import sync, timeit, write_report


def pdist_uniformity(x: torch.Tensor, t: float = 2.0) -> float:
    """What the reference code (and most repos) do: all pairwise distances with torch.pdist."""
    z = torch.nn.functional.normalize(x, dim=1)
    return torch.pdist(z, p=2).pow(2).mul(-t).exp().mean().log().item()


def gram_gemms_only(z: torch.Tensor, tile: int) -> int:
    """The upper-triangle tile GEMMs the exact kernel performs, and nothing else; returns their FLOP count."""
    n, d = z.shape
    flops = 0
    for i0 in range(0, n, tile):
        zi = z[i0 : i0 + tile]
        for j0 in range(i0, n, tile):
            zj = z[j0 : j0 + tile]
            torch.mm(zi, zj.T)
            flops += 2 * zi.shape[0] * zj.shape[0] * d
    return flops


def cpu_part(n: int, d: int, repeat: int, peak_size: int = 2048) -> dict:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, d, generator=gen)
    ours_s, ours_med, ours = timeit(lambda: float(M.uniformity(x)), repeat=repeat)
    ref_s, ref_med, ref = timeit(lambda: pdist_uniformity(x), repeat=repeat)
    ref64 = pdist_uniformity(x.double())
    xs = x.numpy()
    er_s, _, er = timeit(lambda: M.effective_rank(xs), repeat=repeat)

    def numpy_erank() -> float:
        s = np.linalg.svd(xs - xs.mean(0), compute_uv=False)
        p = s / s.sum()
        return float(np.exp(-(p * np.log(p)).sum()))

    np_s, _, np_er = timeit(numpy_erank, repeat=repeat)
    s64 = np.linalg.svd(xs.astype(np.float64) - xs.astype(np.float64).mean(0), compute_uv=False)
    p64 = s64 / s64.sum()
    er64 = float(np.exp(-(p64 * np.log(p64)).sum()))
    ci_s, _, _ = timeit(lambda: M.confidence_interval("uniformity", x), repeat=1)
    from embedgeom.metrics._kernels import CPU_TILE

    zn = torch.nn.functional.normalize(x, dim=1)
    gemm_s, _, gemm_flops = timeit(lambda: gram_gemms_only(zn, CPU_TILE), repeat=repeat)
    peak = matmul_tflops(torch.float32, "cpu", size=peak_size)
    return {
        "uniformity_gemms_only_s": gemm_s, "uniformity_gemm_gflops": gemm_flops / gemm_s / 1e9,
        f"cpu_float32_matmul_peak_gflops_{peak_size}": peak * 1e3,
        "n": n, "d": d, "dtype": "float32", "t": 2.0,
        "uniformity_ours_s": ours_s, "uniformity_ours_median_s": ours_med,
        "uniformity_pdist_s": ref_s, "uniformity_pdist_median_s": ref_med,
        "speedup_vs_pdist": ref_s / ours_s,
        "value_ours": ours, "value_pdist_float32": ref, "value_pdist_float64": ref64,
        "abs_diff_vs_pdist_float32": abs(ours - ref), "abs_diff_vs_float64": abs(ours - ref64),
        "uniformity_with_jackknife_ci_s": ci_s,
        "effective_rank_ours_s": er_s, "effective_rank_numpy_svd_s": np_s,
        "effective_rank_abs_diff_vs_numpy_float32_svd": abs(er - np_er),
        "effective_rank_abs_diff_vs_float64_svd": abs(er - er64),
        "numpy_float32_svd_abs_diff_vs_float64_svd": abs(np_er - er64),
    }


def matmul_tflops(dtype: torch.dtype, dev: str, size: int = 8192, tf32: bool = False) -> float:
    a = torch.randn(size, size, device=dev, dtype=dtype)
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    best, _, _ = timeit(lambda: a @ a, repeat=10, device=dev)
    torch.backends.cuda.matmul.allow_tf32 = old
    return 2 * size**3 / best / 1e12


@dataclass(frozen=True)
class GpuSizes:
    """What the accelerator part measures: exact uniformity at (n, d), the chunked-cdist comparison on the first
    ``sub_n`` rows, and streaming spectra over ``stream_batches`` x ``stream_rows`` rows."""

    device: str = "cuda"
    n: int = 1_000_000
    d: int = 768
    repeat: int = 2
    warmup: int = 1
    sub_n: int = 100_000
    stream_batches: int = 100
    stream_rows: int = 100_000
    peak_size: int = 8192


GPU = GpuSizes()
#: The same code path on the CPU at toy sizes (checks the script, measures nothing).
SMOKE = GpuSizes(device="cpu", n=1024, d=32, repeat=1, warmup=0, sub_n=512, stream_batches=4, stream_rows=500,
                 peak_size=256)


def gpu_part(sizes: GpuSizes = GPU, flush: Callable[[dict], None] | None = None) -> dict:
    """The accelerator part at ``sizes``; ``flush(out)`` is called with the numbers so far after each measurement."""
    out: dict = {"sizes": asdict(sizes)}
    dev = sizes.device

    def done() -> None:
        if flush is not None:
            flush(out)

    # bf16 matmul rate of this GPU, to express the kernel as a fraction of the machine
    out["bf16_matmul_8192_tflops"] = matmul_tflops(torch.bfloat16, dev, size=sizes.peak_size)
    torch.backends.cuda.matmul.allow_tf32 = False
    out["fp32_matmul_8192_tflops"] = matmul_tflops(torch.float32, dev, size=sizes.peak_size)
    n, d = sizes.n, sizes.d
    x = torch.randn(n, d, device=dev)
    s, _, u = timeit(lambda: float(M.uniformity(x)), repeat=sizes.repeat, warmup=sizes.warmup, device=dev)
    flops = n * n * d  # upper triangle incl. diagonal blocks ~ n^2/2 pairs x 2 flops x d
    out.update({"uniformity_n": n, "uniformity_d": d, "uniformity_exact_s": s, "uniformity_value": u,
                "uniformity_achieved_tflops": flops / s / 1e12,
                "uniformity_fraction_of_fp32_matmul": flops / s / 1e12 / out["fp32_matmul_8192_tflops"],
                "uniformity_fraction_of_bf16_matmul": flops / s / 1e12 / out["bf16_matmul_8192_tflops"]})
    done()
    s_tf32, _, u_tf32 = timeit(lambda: float(M.uniformity(x, matmul_precision="high")), repeat=sizes.repeat,
                               warmup=sizes.warmup, device=dev)
    out["tf32_matmul_8192_tflops"] = matmul_tflops(torch.float32, dev, size=sizes.peak_size, tf32=True)
    out.update({"uniformity_tf32_s": s_tf32, "uniformity_tf32_value": u_tf32,
                "uniformity_tf32_abs_diff": abs(u_tf32 - u),
                "uniformity_tf32_fraction_of_tf32_matmul": flops / s_tf32 / 1e12 / out["tf32_matmul_8192_tflops"]})
    done()
    sub = x[: sizes.sub_n]
    ref_s, _, ref = timeit(lambda: pdist_like_chunked(sub), repeat=1, device=dev)
    ours_s, _, ours = timeit(lambda: float(M.uniformity(sub)), repeat=2, device=dev)
    out.update({"n100k_ours_s": ours_s, "n100k_chunked_cdist_s": ref_s, "n100k_abs_diff": abs(ours - ref)})
    done()
    x = sub = None
    if dev.startswith("cuda"):
        torch.cuda.empty_cache()
    # streaming spectra over 10M rows, fed in 100k-row batches generated on the GPU
    acc = M.SpectralAccumulator()
    gen = torch.Generator(device=dev).manual_seed(0)
    sync(dev)
    t0 = time.perf_counter()
    for _ in range(sizes.stream_batches):
        acc.update(torch.randn(sizes.stream_rows, d, device=dev, generator=gen))
    res = acc.compute()
    sync(dev)
    out.update({"streaming_rows": acc.n, "streaming_s": time.perf_counter() - t0,
                "streaming_effective_rank": res["effective_rank"]})
    done()
    return out


def pdist_like_chunked(x: torch.Tensor, t: float = 2.0, chunk: int = 8192) -> float:
    """The usual GPU workaround: chunked torch.cdist, mean of exp over i<j."""
    z = torch.nn.functional.normalize(x, dim=1)
    n = z.shape[0]
    total = torch.zeros((), dtype=torch.float64, device=z.device)
    for i in range(0, n, chunk):
        dd = torch.cdist(z[i : i + chunk], z).pow(2)
        k = dd.mul(-t).exp()
        idx = torch.arange(i, min(i + chunk, n), device=z.device)
        mask = torch.arange(n, device=z.device)[None, :] > idx[:, None]
        total += (k * mask).sum(dtype=torch.float64)
    return math.log(float(total) / (n * (n - 1) / 2))


def markdown(res: dict, repeat: int) -> str:
    c = res["cpu"]
    peak_key = next(k for k in c if k.startswith("cpu_float32_matmul_peak_gflops_"))
    md = [
        "# Metrics benchmark",
        "",
        *([f"**{res['note']}**", ""] if res.get("note") else []),
        f"CPU, n={c['n']}, d={c['d']}, float32, t=2, best of {repeat} after one warm-up call.",
        "",
        "| what | ours (s) | baseline (s) | speed-up | |value difference| |",
        "|---|---|---|---|---|",
        f"| exact uniformity vs `torch.pdist` formulation | {c['uniformity_ours_s']:.3f} | "
        f"{c['uniformity_pdist_s']:.3f} | {c['speedup_vs_pdist']:.1f}x | {c['abs_diff_vs_pdist_float32']:.1e} |",
        f"| effective rank vs numpy SVD | {c['effective_rank_ours_s']:.3f} | "
        f"{c['effective_rank_numpy_svd_s']:.3f} | {c['effective_rank_numpy_svd_s'] / c['effective_rank_ours_s']:.1f}x"
        f" | {c['effective_rank_abs_diff_vs_numpy_float32_svd']:.1e} |",
        "",
        f"Uniformity value: ours {c['value_ours']:.9f}, pdist float32 {c['value_pdist_float32']:.9f}, "
        f"pdist float64 {c['value_pdist_float64']:.9f} (ours vs float64: {c['abs_diff_vs_float64']:.1e}).",
        f"Exact uniformity *with* its delete-one jackknife interval: {c['uniformity_with_jackknife_ci_s']:.3f} s.",
        f"Where the time goes: the kernel's tile GEMMs alone take {c['uniformity_gemms_only_s']:.3f} s "
        f"({c['uniformity_gemms_only_s'] / c['uniformity_ours_s']:.0%} of the kernel) at "
        f"{c['uniformity_gemm_gflops']:.0f} GFLOP/s, against {c[peak_key]:.0f} GFLOP/s "
        f"for one float32 {peak_key.rsplit('_', 1)[1]}^3 matmul on this CPU; the rest is the clamp/exp/sum passes "
        "over each block.",
        f"Effective rank: numpy's float32 SVD differs from a float64 SVD by "
        f"{c['numpy_float32_svd_abs_diff_vs_float64_svd']:.1e};"
        f" ours (float64 moments) differs from the float64 SVD by {c['effective_rank_abs_diff_vs_float64_svd']:.1e}.",
    ]
    if "gpu" in res:
        g = res["gpu"]
        md += ["", "## GPU" if g["sizes"]["device"].startswith("cuda") else "## Accelerator part (on the CPU)", "",
               "```", *[f"{k}: {v}" for k, v in g.items()], "```"]
    if not res.get("complete", True):
        md += ["", "**Incomplete**: the run stopped before every part was measured; what is above was measured."]
    return "\n".join(md)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10_000, help="CPU part: rows")
    ap.add_argument("--d", type=int, default=384, help="CPU part: dimensions")
    ap.add_argument("--repeat", type=int, default=3, help="CPU part: timed calls per measurement")
    ap.add_argument("--gpu", action="store_true", help="add the CUDA part (n=1M, d=768; 10M-row streaming)")
    ap.add_argument("--smoke", action="store_true", help="the --gpu code path on the CPU at toy sizes")
    ap.add_argument("--gpu-repeat", type=int, default=GPU.repeat, help="GPU part: timed n=1M uniformity calls")
    ap.add_argument("--gpu-warmup", type=int, default=GPU.warmup, help="GPU part: untimed calls before them")
    ap.add_argument("--out", type=Path, default=None,
                    help="report directory (default reports/benchmarks; with --smoke, print only unless given)")
    args = ap.parse_args(argv)
    if args.gpu and args.smoke:
        ap.error("--gpu and --smoke exclude each other")
    if args.gpu and not torch.cuda.is_available():
        raise SystemExit("--gpu needs a CUDA device (use --smoke to check the code path on the CPU)")
    sizes = None
    n, d, repeat, peak_size = args.n, args.d, args.repeat, 2048
    if args.gpu:
        sizes = GpuSizes(repeat=args.gpu_repeat, warmup=args.gpu_warmup)
    elif args.smoke:
        sizes = SMOKE
        n, d, repeat, peak_size = min(n, 512), min(d, 32), 1, 256
        torch.set_num_threads(1)  # toy sizes: one thread is immune to cores shared with other work
    name = "metrics_gpu" if sizes else "metrics_cpu"
    res: dict = {"complete": False}
    if args.smoke:
        res["note"] = "Smoke run: the GPU code path on the CPU at toy sizes; these numbers measure nothing."

    def flush(final: bool = False) -> Path | None:
        res["complete"] = final
        if args.smoke and args.out is None:
            return None
        return write_report(name, res, markdown(res, repeat), args.out)

    res["cpu"] = cpu_part(n, d, repeat, peak_size)
    if sizes:
        flush()

        def partial(g: dict) -> None:
            res["gpu"] = g
            flush()

        res["gpu"] = gpu_part(sizes, partial)
    path = flush(final=True)
    print(path.read_text() if path else markdown(res, repeat))


if __name__ == "__main__":
    main()
