"""The reference study's protocol in its own subpackage: ``PROTOCOL.md`` beside this file describes, in the project's
own words, what ``--protocol paper`` follows step by step; :mod:`.paper` implements it (items, tokenisation,
forward pass, poolings, metrics), :mod:`.paper_probes` its probes, and :mod:`.protocols` lists where it cannot
follow the reference code and where embedgeom's default protocol chooses otherwise. Modules, CLI help and every
saved reference-protocol result cite the description by :data:`PROTOCOL_DOC`."""

from __future__ import annotations

from pathlib import Path

#: Where the description lives in the repository (and in the installed package), as results cite it.
PROTOCOL_DOC = "embedgeom/reference/PROTOCOL.md"


def protocol_description() -> str:
    """The text of the reference protocol's description."""
    return (Path(__file__).with_name("PROTOCOL.md")).read_text(encoding="utf-8")
