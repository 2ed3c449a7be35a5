"""The reference protocol is described in the repository, and code, help and results cite that description."""

from __future__ import annotations

import pathlib

import embedgeom
from embedgeom.options import AnalysisOptions
from embedgeom.reference import PROTOCOL_DOC, protocol_description
from embedgeom.reference.protocols import PAPER

ROOT = pathlib.Path(embedgeom.__file__).parent


def test_the_cited_description_exists_and_covers_each_step():
    assert (ROOT.parent / PROTOCOL_DOC).is_file()
    text = protocol_description()
    for heading in ("## 1. Items", "## 2. Encoding", "## 3. Poolings", "## 4. Metrics", "## 5. Probes"):
        assert heading in text
    # the token probe's rules as the reference code applies them
    assert "without truncation" in text and "items kept" in text and "single member" in text


def test_code_help_and_results_cite_the_in_repo_description():
    stale = [str(p.relative_to(ROOT)) for p in ROOT.rglob("*.py") if "paper_protocol.md" in p.read_text()]
    assert stale == []
    assert PROTOCOL_DOC in AnalysisOptions.help("protocol")
    assert PROTOCOL_DOC in PAPER.description


def test_reference_results_record_the_description(tiny_bert_dir, tmp_path):
    import embedgeom as eg

    path = tmp_path / "t.txt"
    path.write_text("".join(f"a short text number {i}\n" for i in range(12)))
    res = eg.analyze(tiny_bert_dir, str(path), protocol="paper", probes=False, cache=False, device="cpu")
    assert all(v == PROTOCOL_DOC for v in res.options["metric_definitions"].values())
    assert all(str(card["reference"]).startswith(PROTOCOL_DOC) for card in res.tasks.values())
