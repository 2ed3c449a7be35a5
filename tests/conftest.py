"""Shared fixtures: deterministic random data, tiny BERTs and their analyses, and the optional
real-model/sample-suite packages. Plain helpers live in tests/fixtures.py."""

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



@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory):
    from tests.fixtures import make_tiny_bert

    return make_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def tiny_encoder(tiny_bert_dir):
    import embedgeom as eg

    return eg.load_encoder(tiny_bert_dir, device="cpu", dtype="float32")


@pytest.fixture(scope="session")
def analysed(tiny_bert_dir, tmp_path_factory):
    """Two tiny BERTs (seeds 0 and 5, names tiny-a and tiny-b) on lee (scored pairs, 4 positives) and polarity
    (labels), every pooling, layers 0, 1, 2; probes on the first model's lee only (they are the slow part)."""
    from tests.fixtures import analyse_pair, make_tiny_bert

    other = tmp_path_factory.getbasetemp() / "tiny-bert-seed5"  # one per session, whichever module asks first
    if not (other / "config.json").is_file():
        make_tiny_bert(other, seed=5)
    return analyse_pair(str(tiny_bert_dir), str(other))


@pytest.fixture(scope="session")
def analysed_90(tiny_encoder):
    """A tiny BERT analysed with confidence=0.9 on lee (mean and max pooling, layers 0-2, no probes) and the paired
    comparison of its two poolings at the same confidence."""
    import embedgeom as eg

    res = eg.analyze(tiny_encoder, ["sample:lee"], name="tiny-90", poolings=("mean", "max"), layers="all",
                     max_texts=40, probes=False, cache=False, confidence=0.9)
    return res, eg.compare(res, poolings=("mean", "max"), groups=5, confidence=0.9)


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
