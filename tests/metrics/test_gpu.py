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


def test_block_wise_metrics_on_cuda_equal_the_cpu_ones():
    from embedgeom.metrics.tiled import RowSource, streamed_measure

    x = np.random.default_rng(2).standard_normal((9000, 96)).astype(np.float32)
    names = list(M.names("set"))
    cpu, ev_cpu = streamed_measure(names, RowSource.of_array(x), block=2048)
    gpu, ev_gpu = streamed_measure(names, RowSource.of_array(x), block=2048, device="cuda")
    for name in names:
        assert gpu[name].value == pytest.approx(cpu[name].value, rel=1e-5, abs=1e-6), name
    np.testing.assert_allclose(ev_gpu, ev_cpu, rtol=1e-6, atol=1e-9)
