"""The reference study's protocol, described in the project's own words: ``PROTOCOL.md`` beside this file is what
``--protocol paper`` follows step by step (code: :mod:`embedgeom.paper`, :mod:`embedgeom.paper_probes`; the list
of departures and of the default protocol's deviations: :mod:`embedgeom.protocols`). Modules, CLI help and every
saved reference-protocol result cite it by :data:`PROTOCOL_DOC`."""

from __future__ import annotations

from pathlib import Path

#: Where the description lives in the repository (and in the installed package), as results cite it.
PROTOCOL_DOC = "embedgeom/reference/PROTOCOL.md"


def protocol_description() -> str:
    """The text of the reference protocol's description."""
    return (Path(__file__).with_name("PROTOCOL.md")).read_text(encoding="utf-8")
