"""``python -m embedgeom`` (and ``torchrun -m embedgeom``) runs the command-line interface."""

from .cli import main

main()
