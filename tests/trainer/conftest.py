"""Shared fixtures for the trainer tests: an isolated cache, a small synthetic corpus, tiny overrides."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

#: Smaller than the tiny preset: 1 layer, d=32, 32-token rows, batch 8, vocab <= 400. Seconds per run.
SMALL = (
    "model.hidden_size=32", "model.num_layers=1", "model.num_heads=2", "model.intermediate_size=64",
    "data.seq_len=32", "data.vocab_size=400", "train.batch_size=8", "predictor.hidden_size=32",
    "predictor.heads=2", "optim.warmup_steps=2", "train.eval_batches=2", "train.geometry_texts=32",
)

_ADJ = "red green blue small large old new quiet loud bright dark warm cold happy sad quick slow".split()
_NOUN = "cat dog bird fish horse mouse river tree house car train city garden window teacher child".split()
_VERB = "sees finds likes follows watches paints visits helps chases meets builds remembers".split()


def synthetic_documents(n_docs: int = 600, seed: int = 0) -> list[str]:
    """Grammatical toy English: 1-4 sentences "the ADJ NOUN VERB the ADJ NOUN ." per document."""
    rng = np.random.default_rng(seed)
    docs = []
    for _ in range(n_docs):
        sentences = []
        for _ in range(int(rng.integers(1, 5))):
            a1, a2 = rng.choice(_ADJ, 2)
            n1, n2 = rng.choice(_NOUN, 2)
            sentences.append(f"the {a1} {n1} {rng.choice(_VERB)} the {a2} {n2} .")
        docs.append(" ".join(sentences))
    return docs


@pytest.fixture(scope="session")
def trainer_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("trainer-cache")


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(trainer_cache: Path) -> Iterator[None]:
    """Never touch ~/.cache: tokenizers and packed data go to one session-wide temporary cache."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EMBEDGEOM_CACHE", str(trainer_cache))
        yield


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """The test models are tiny: one intra-op thread is faster, and immune to a busy second core (with two
    OpenMP threads every parallel region waits for the descheduled one; steps then take 50x longer)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def corpus_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A .jsonl corpus of 600 synthetic documents (shared by the run tests, so its cache is built once)."""
    path = tmp_path_factory.mktemp("corpus") / "toy.jsonl"
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in synthetic_documents()))
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
