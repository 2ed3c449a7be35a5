"""What :func:`trainer.run` returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class TrainSummary:
    """Outcome of a (possibly resumed) training run.

    ``tokens_seen`` counts real (non-padding) tokens over the whole run, all ranks; ``wall_seconds`` and
    ``tokens_per_s`` cover this call only (``tokens_per_s`` = tokens trained in this call / seconds spent in the
    training loop). ``final_losses`` holds the last logged training losses and the last held-out MLM loss;
    ``geometry`` the last geometry snapshot (with the collapse watch's numbers); ``watch`` the collapse watch:
    ``enabled``, ``latest`` (the last snapshot's ``geometry_*``/``watch_*`` numbers), ``thresholds``,
    ``checked_from_step`` (the end of the grace period), ``reference_effective_rank`` (the student's at step 0) and
    ``tripped`` (criterion -> step, value,
    threshold, message; empty when nothing tripped). An ``mlm`` run has no teacher or predictor numbers.
    """

    out_dir: Path
    final_checkpoint: Path
    objective: str
    preset: str
    steps: int
    tokens_seen: int
    final_losses: dict[str, float]
    wall_seconds: float
    tokens_per_s: float
    resumed_from: int | None = None
    geometry: dict[str, Any] = field(default_factory=dict)
    world_size: int = 1
    device: str = "cpu"
    watch: dict[str, Any] = field(default_factory=dict)
