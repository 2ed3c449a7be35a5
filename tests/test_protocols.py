"""Protocol descriptions: every deviation of the default from the reference says what, what instead, and why."""

from __future__ import annotations

import pytest

from embedgeom.reference.protocols import (
    DEFAULT,
    PAPER,
    PAPER_DEVIATIONS,
    PAPER_PROTOCOL_DEPARTURES,
    PROTOCOL_CHOICES,
    PROTOCOLS,
    get_protocol,
)


def test_protocol_lookup():
    assert PROTOCOLS == ("default", "paper") and PROTOCOL_CHOICES == ("default", "paper", "both")
    assert get_protocol("paper") is PAPER and get_protocol("default") is DEFAULT
    assert PAPER.deviations is PAPER_DEVIATIONS and PAPER.departures is PAPER_PROTOCOL_DEPARTURES
    with pytest.raises(ValueError, match="protocol: expected one of default, paper, got 'mine'"):
        get_protocol("mine")


def test_every_deviation_says_reference_default_and_why():
    for key in ("items", "pair_text", "tokenization", "attention_mask", "poolings", "attention", "spectrum",
                "spectral_entropy", "alignment", "intra_inter_ratio", "probes", "token_probe", "uniformity"):
        line = PAPER_DEVIATIONS[key]
        assert line.startswith("reference: ") and "; default: " in line and "; why: " in line, key
    assert "log(min(n, D))" in PAPER_DEVIATIONS["spectral_entropy"]
    assert "first 2,000 rows" in PAPER_DEVIATIONS["items"] and "unweighted mean" in PAPER_DEVIATIONS["alignment"]
    assert {"seeded_attention_head", "seeded_uniformity_subset", "encoders"} <= set(PAPER_PROTOCOL_DEPARTURES)
