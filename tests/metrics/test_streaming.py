"""SpectralAccumulator gives the functional metrics' numbers on the concatenated data, and merges."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from embedgeom import metrics as M

SPECTRAL = [n for n, e in M.REGISTRY.items() if e.family == "spectral"]


def test_streaming_equals_batch_for_any_chunking(rng):
    x = rng.standard_normal((1000, 24)) @ rng.standard_normal((24, 24)) + 4.0
    full = {name: M.REGISTRY[name](x) for name in SPECTRAL}
    for sizes in ([1000], [1, 999], [7] * 142 + [6], [500, 250, 250]):
        acc = M.SpectralAccumulator()
        start = 0
        for s in sizes:
            acc.update(x[start : start + s])
            start += s
        got = acc.compute()
        assert got["n"] == 1000
        for name in SPECTRAL:
            assert got[name] == pytest.approx(full[name], rel=1e-9, abs=1e-12), (sizes, name)
    np.testing.assert_allclose(acc.spectrum().eigenvalues, M.eigenspectrum(x), rtol=1e-9)


def test_merge_of_shards_equals_whole(rng):
    x = rng.standard_normal((600, 16))
    shards = [M.SpectralAccumulator().update(part) for part in np.array_split(x, 5)]
    acc = M.SpectralAccumulator()
    for s in shards:
        acc.merge(s)
    assert acc.n == 600
    assert acc.compute()["effective_rank"] == pytest.approx(M.effective_rank(x), rel=1e-10)


def test_state_dict_round_trip(rng):
    x = rng.standard_normal((100, 8))
    acc = M.SpectralAccumulator().update(x)
    back = M.SpectralAccumulator.from_state_dict(acc.state_dict())
    np.testing.assert_array_equal(back.spectrum().eigenvalues, acc.spectrum().eigenvalues)
    assert M.SpectralAccumulator.from_state_dict(M.SpectralAccumulator().state_dict()).n == 0


def test_large_common_mean_does_not_cancel(rng):
    # embeddings with a common offset 1e4 times their spread: a naive sum(xx^T) - n mu mu^T loses the
    # small eigenvalues; the pairwise (Chan) update keeps them
    eigs = np.linspace(1.0, 1e-3, 10)
    x = rng.standard_normal((5000, 10)) * np.sqrt(eigs) + 1e4
    acc = M.SpectralAccumulator()
    for part in np.array_split(x, 50):
        acc.update(part)
    ref = np.sort(np.linalg.eigvalsh(np.cov((x - x.mean(0)).T)))[::-1]
    np.testing.assert_allclose(acc.spectrum().eigenvalues, ref, rtol=1e-7)


def test_dimension_mismatch_is_a_clear_error(rng):
    acc = M.SpectralAccumulator().update(rng.standard_normal((5, 4)))
    with pytest.raises(ValueError, match="dimension 4"):
        acc.update(rng.standard_normal((5, 3)))
    with pytest.raises(RuntimeError, match="update"):
        M.SpectralAccumulator().spectrum()


def _dist_worker(rank: int, world: int, path: str, result_path: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{path}", rank=rank, world_size=world)
    gen = np.random.default_rng(7)
    x = gen.standard_normal((400, 12))
    acc = M.SpectralAccumulator().update(np.array_split(x, world)[rank])
    acc.all_reduce()
    torch.save({"er": acc.compute()["effective_rank"], "n": acc.n}, f"{result_path}.{rank}")
    dist.destroy_process_group()


def test_all_reduce_across_two_gloo_processes(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_dist_worker, args=(2, str(tmp_path / "init"), str(tmp_path / "res")), nprocs=2, join=True)
    x = np.random.default_rng(7).standard_normal((400, 12))
    want = M.effective_rank(x)
    for rank in range(2):
        got = torch.load(f"{tmp_path / 'res'}.{rank}")
        assert got["n"] == 400
        assert got["er"] == pytest.approx(want, rel=1e-10)
