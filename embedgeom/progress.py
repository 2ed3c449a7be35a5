"""How long work reports its progress: a ``progress(stage, done, total)`` callable the caller may pass (the CLI draws
it on stderr; the library itself never prints)."""

from __future__ import annotations

from collections.abc import Callable

#: ``progress(stage, done, total)``: called as work proceeds; ``done == total`` closes a stage.
Progress = Callable[[str, int, int], None]


def emit(progress: Progress | None, stage: str, done: int, total: int) -> None:
    """Report ``done`` of ``total`` for ``stage`` when a callback was given."""
    if progress is not None:
        progress(stage, done, total)
