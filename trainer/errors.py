"""The trainer's one exception type (bad input or an unrecoverable training state, in one clear line) and its
warning categories (the library never prints: what the user should know but that needs no action is a warning)."""

from __future__ import annotations

from pathlib import Path


class TrainerError(ValueError):
    """Bad input to the trainer (or a run that cannot go on), described in one line: what argument, what was
    expected, what came, and how to fix it."""


def fail(name: str, expected: str, got: str, fix: str) -> TrainerError:
    """Build the standard one-line message ``"{name}: expected {expected}, got {got}. {fix}"``."""
    return TrainerError(f"{name}: expected {expected}, got {got}. {fix}")


class TrainingDiverged(TrainerError):
    """A non-finite loss stopped the run. Carries the step, the last good checkpoint (or None) and the losses."""

    def __init__(self, message: str, *, step: int, last_checkpoint: Path | None, losses: dict[str, float]):
        super().__init__(message)
        self.step = step
        self.last_checkpoint = last_checkpoint
        self.losses = dict(losses)


class CheckpointWriteError(TrainerError):
    """Writing a checkpoint failed (e.g. the disk is full); the previous checkpoint is intact."""

    def __init__(self, message: str, *, previous: Path | None):
        super().__init__(message)
        self.previous = previous


class CheckpointDamaged(TrainerError):
    """A checkpoint failed its integrity check (:func:`trainer.checkpoint.read_checkpoint`): a file missing,
    truncated, unreadable or not matching the sha256 its manifest records, a step that disagrees with the directory
    name, or non-finite weights. ``problems`` holds ``(file, reason)`` pairs; ``step`` is the directory's step."""

    def __init__(self, message: str, *, checkpoint: Path, step: int | None, problems: list[tuple[str, str]]):
        super().__init__(message)
        self.checkpoint = checkpoint
        self.step = step
        self.problems = list(problems)


class TrainerWarning(UserWarning):
    """Base category of the trainer's warnings (``warnings.simplefilter("error", trainer.TrainerWarning)`` turns
    them all into errors)."""


class PartialRunWarning(TrainerWarning):
    """``--out`` held a run that stopped before its first checkpoint: having nothing to resume, it was overwritten
    (or, under ``--resume``, started again from step 0)."""


class CollapseWarning(TrainerWarning):
    """The collapse watch (``watch.*``, see trainer/README.md) saw a criterion trip at an evaluation: the student's
    held-out sentence embeddings losing directions, or the hybrid's predictor output far less varied than the
    teacher targets. Emitted once per criterion and run, naming the step, the numbers and the threshold."""


class DamagedCheckpointWarning(TrainerWarning):
    """``--resume`` found the newest checkpoint(s) damaged and continues from the newest intact one; the warning
    names each damaged checkpoint with its step, file and what is wrong, and the checkpoint used."""
