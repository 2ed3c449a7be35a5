"""Pre-train BERT encoders with masked language modelling (``mlm``) or MLM + JEPA (``hybrid``).

>>> import trainer
>>> summary = trainer.run("hybrid", "tiny", "sample:wiki", "runs/tiny-hybrid", steps=300)
>>> summary.final_checkpoint          # a Hugging Face directory: AutoModel.from_pretrained(...) loads it

Command line: ``python -m trainer --objective hybrid --preset tiny --corpus sample:wiki --out runs/x`` (also
under ``torchrun``). ``import trainer`` is light; torch and transformers load on the first ``run``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

from .config import OBJECTIVES, PRESETS, TrainerConfig, overrides_for, preset_config, resolve_config, valid_keys
from .errors import (
    CheckpointDamaged,
    CheckpointWriteError,
    CollapseWarning,
    DamagedCheckpointWarning,
    PartialRunWarning,
    TrainerError,
    TrainerWarning,
    TrainingDiverged,
)
from .summary import TrainSummary

__all__ = [
    "OBJECTIVES",
    "PRESETS",
    "CheckpointDamaged",
    "CheckpointWriteError",
    "CollapseWarning",
    "DamagedCheckpointWarning",
    "PartialRunWarning",
    "TrainSummary",
    "TrainerConfig",
    "TrainerError",
    "TrainerWarning",
    "TrainingDiverged",
    "overrides_for",
    "preset_config",
    "resolve_config",
    "run",
    "valid_keys",
]


def run(objective: str, preset: str, corpus: str | os.PathLike, out: str | os.PathLike, *, steps: int | None = None,
        resume: bool = False, overrides: Sequence[str] = (), device: str = "auto",
        progress: Callable[[dict], None] | None = None) -> TrainSummary:
    """Train and checkpoint an encoder; see :func:`trainer.loop.run` for the full contract."""
    from .loop import run as _run

    return _run(objective, preset, corpus, out, steps=steps, resume=resume, overrides=overrides, device=device,
                progress=progress)
