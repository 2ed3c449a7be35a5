"""Benchmark and check: `torchrun --nproc-per-node 2 -m embedgeom analyze` against the same analysis in one process.

    python tests/benchmarks/bench_distributed.py --out DIR            # MiniLM, sample:bbc, mean and max pooling
    python tests/benchmarks/bench_distributed.py --smoke --out DIR    # 60 texts, on the CPU

Each run is a fresh process (torchrun's start-up included in its wall time). On a machine with two or more GPUs each
rank uses its own GPU (NCCL for CUDA tensors, gloo for the CPU ones); with one GPU both ranks share it; on a CPU the
ranks use gloo. The report states every metric's largest relative difference between the two results (the
sharded analysis promises 1e-6) and whether the probes agree exactly. Writes DIR/distributed_gpu.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.benchmarks._harness import write_report


def _run(cmd: list[str], timeout: float) -> float:
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")})
    if done.returncode != 0:
        raise SystemExit(f"failed ({done.returncode}): {' '.join(cmd)}\n{done.stderr[-3000:]}")
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--texts", type=int, default=2000)
    ap.add_argument("--timeout", type=float, default=300)
    args = ap.parse_args()
    import torch

    import embedgeom as eg
    from embedgeom.samples import minilm_path

    n = 60 if args.smoke else args.texts
    gpus = torch.cuda.device_count()
    device = "cpu" if args.smoke or gpus == 0 else "cuda"
    work = Path(tempfile.mkdtemp(prefix="embedgeom-dist-"))
    common = ["analyze", str(minilm_path()), "--data", "sample:bbc", "--max-texts", str(n), "--pooling", "mean,max",
              "--device", device, "--no-cache", "--no-embeddings", "-q"]
    one_s = _run([sys.executable, "-m", "embedgeom", *common, "--out", str(work / "one")], args.timeout)
    two_s = _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                  "-m", "embedgeom", *common, "--out", str(work / "two")], args.timeout)
    one, two = eg.AnalysisResult.load(work / "one"), eg.AnalysisResult.load(work / "two")
    fa, fb = one.to_frame(), two.to_frame()
    merged = fa.merge(fb, on=["task", "pooling", "layer", "kind", "name"], suffixes=("_one", "_two"))
    metrics = merged[merged.kind == "metric"]
    rel = ((metrics.value_one - metrics.value_two).abs() / metrics.value_one.abs().clip(lower=1e-12))
    probes = merged[merged.kind == "probe"]
    payload = {"complete": True, "texts": n, "device": device, "gpus": gpus, "processes": 2,
               "backend": two.options.get("distributed", {}).get("backend"),
               "one_process_s": one_s, "torchrun_2_s": two_s, "rows_compared": len(merged),
               "max_metric_relative_difference": float(rel.max()),
               "worst_metric": str(metrics.loc[rel.idxmax(), "name"]),
               "probes_equal": bool((probes.value_one == probes.value_two).all()),
               "within_1e-6": bool(rel.max() <= 1e-6)}
    md = "\n".join([
        "# torchrun (2 processes) against one process: analyze of MiniLM on sample:bbc",
        "",
        f"{n} texts, mean and max pooling, last layer, probes on, device {device} ({gpus} GPU(s) visible; backend "
        f"{payload['backend']}). Wall times include each command's start-up (torchrun's rendezvous too).",
        "",
        "| run | wall s |", "|---|---:|",
        f"| one process | {one_s:.1f} |", f"| torchrun, 2 processes | {two_s:.1f} |",
        "",
        f"Every metric agrees to {payload['max_metric_relative_difference']:.2g} relative (worst: "
        f"{payload['worst_metric']}; the promise is 1e-6); probes equal: {payload['probes_equal']}.",
    ])
    print(write_report("distributed_gpu", payload, md, args.out))
    if not payload["within_1e-6"]:
        raise SystemExit(f"the sharded result differs from one process's by {rel.max():.3g} relative")


if __name__ == "__main__":
    main()
