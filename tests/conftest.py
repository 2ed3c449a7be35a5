"""Shared fixtures: deterministic random data and the optional real-model/sample-suite packages."""

from __future__ import annotations

import numpy as np
import pytest
import torch


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)


@pytest.fixture(autouse=True)
def _seed_torch() -> None:
    torch.manual_seed(0)


def random_rotation(d: int, rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    return q * np.sign(np.diag(r))


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory):
    from tests.fixtures import make_tiny_bert

    return make_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def tiny_encoder(tiny_bert_dir):
    import embedgeom as eg

    return eg.load_encoder(tiny_bert_dir, device="cpu", dtype="float32")


@pytest.fixture(scope="session")
def minilm_dir():
    from embedgeom.samples import minilm_path

    return minilm_path()


@pytest.fixture(scope="session")
def minilm(minilm_dir):
    import embedgeom as eg

    return eg.load_encoder(minilm_dir, device="cpu", dtype="float32")


@pytest.fixture(autouse=True, scope="session")
def _session_cache(tmp_path_factory):
    """One embedgeom cache root for the test session, never the user's (cleaned samples are shared within the
    session; tests of the embedding cache pass their own directories)."""
    import os

    old = os.environ.get("EMBEDGEOM_CACHE")
    os.environ["EMBEDGEOM_CACHE"] = str(tmp_path_factory.mktemp("embedgeom-cache"))
    yield
    if old is None:
        os.environ.pop("EMBEDGEOM_CACHE", None)
    else:
        os.environ["EMBEDGEOM_CACHE"] = old
