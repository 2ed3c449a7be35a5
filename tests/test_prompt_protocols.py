"""A prompt reaches every path that embeds texts: the reference protocol prepends it exactly as a user could by
hand, and the spilled (chunked) analysis gives the in-memory analysis's numbers with the same prompt."""

from __future__ import annotations

import dataclasses

import embedgeom as eg
from embedgeom.reference.paper import analyze_paper_task, paper_items


def test_the_reference_protocol_prepends_the_prompt(tiny_encoder):
    items = paper_items("sample:polarity", max_samples=30)
    prompted = analyze_paper_task(tiny_encoder, items, prompt="query: ", probes=False)
    by_hand = analyze_paper_task(tiny_encoder, dataclasses.replace(items, texts=tuple("query: " + t for t in
                                                                                       items.texts)), probes=False)
    plain = analyze_paper_task(tiny_encoder, items, probes=False)
    values = [r["value"] for r in prompted.metric_rows]
    assert values == [r["value"] for r in by_hand.metric_rows]
    assert values != [r["value"] for r in plain.metric_rows]
    assert prompted.card["prompt"] == {"text": "query: ", "name": None} and "prompt" not in plain.card


def test_spilled_analysis_applies_the_prompt(tiny_bert_dir):
    kw = {"data": ["sample:polarity"], "poolings": ("mean",), "layers": (2,), "max_texts": 60, "probes": False,
          "cache": False, "device": "cpu", "prompt": "query: "}
    in_memory = eg.analyze(tiny_bert_dir, **kw)
    spilled = eg.analyze(tiny_bert_dir, spill=20, **kw)
    plain = eg.analyze(tiny_bert_dir, spill=20, **{**kw, "prompt": None})
    va = {r["metric"]: r["value"] for r in in_memory.metrics}
    vb = {r["metric"]: r["value"] for r in spilled.metrics}
    assert all(abs(va[m] - vb[m]) <= 1e-6 * max(abs(va[m]), 1e-9) for m in va)
    assert {r["metric"]: r["value"] for r in plain.metrics}["uniformity"] != vb["uniformity"]
    assert spilled.options["prompt"] == "query: "


def test_the_reference_protocol_refuses_a_postprocess_it_would_not_apply(tiny_bert_dir):
    import pytest

    with pytest.raises(ValueError, match=r"^postprocess: the reference protocol measures the vectors as its code does"):
        eg.analyze(tiny_bert_dir, data=["sample:polarity"], max_texts=20, protocol="paper", postprocess="whiten",
                   cache=False)
    both = eg.analyze(tiny_bert_dir, data=["sample:polarity"], max_texts=30, protocol="both",
                      postprocess="standardize", cache=False, probes=False, poolings=("mean",))
    assert both.options["postprocess"] == "standardize" and both.paper.options["postprocess"] == "none"
