"""``python -m trainer`` (also under ``torchrun``): the command line of :mod:`trainer.cli`, which ``embedgeom
train`` shares."""

from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
