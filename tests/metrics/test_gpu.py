"""CPU and CUDA give the same numbers (runs only where a CUDA device is present)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from embedgeom import metrics as M

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.mark.parametrize("name", list(M.REGISTRY))
def test_cpu_equals_cuda(name):
    x = np.random.default_rng(0).standard_normal((3000, 64)).astype(np.float32)
    y = x + 0.1 * np.random.default_rng(1).standard_normal(x.shape).astype(np.float32)
    info = M.REGISTRY[name]
    args_cpu = (torch.from_numpy(x),) if info.kind == "set" else (torch.from_numpy(x), torch.from_numpy(y))
    args_gpu = tuple(a.cuda() for a in args_cpu)
    assert info(*args_gpu) == pytest.approx(info(*args_cpu), rel=1e-5, abs=1e-6)


def test_cuda_uniformity_sampled_and_interval():
    x = torch.randn(20000, 128, device="cuda")
    exact = M.uniformity(x)
    est = M.uniformity(x, method="sampled", n_pairs=2_000_000)
    assert abs(float(est) - float(exact)) < 5 * est.stderr
    ci = M.confidence_interval("uniformity", x)
    assert ci.low < float(exact) < ci.high


def test_tf32_uniformity_stays_close_to_float32():
    x = torch.randn(30000, 256, device="cuda")
    assert float(M.uniformity(x, matmul_precision="high")) == pytest.approx(float(M.uniformity(x)), abs=1e-4)
