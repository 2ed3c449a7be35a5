"""The trained WordPiece tokenizer: BERT conventions, save/load through AutoTokenizer, special ids."""

from __future__ import annotations

import re

import pytest
from transformers import AutoTokenizer

from trainer.errors import TrainerError
from trainer.tokenizer import (
    SPECIAL_TOKENS,
    encoder_for,
    load_tokenizer,
    save_tokenizer,
    special_ids,
    tokenizer_digest,
    train_wordpiece,
)

from .conftest import synthetic_documents


@pytest.fixture(scope="module")
def wordpiece():
    return train_wordpiece(synthetic_documents(200), vocab_size=300, lowercase=True, model_max_length=64)


def test_special_tokens_first_and_template(wordpiece):
    assert [wordpiece.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS] == [0, 1, 2, 3, 4]
    ids = wordpiece("The Red cat sees the dog.")["input_ids"]
    assert ids[0] == 2 and ids[-1] == 3
    assert wordpiece.decode(ids, skip_special_tokens=True) == "the red cat sees the dog."
    sp = special_ids(wordpiece)
    assert (sp.pad, sp.cls, sp.sep, sp.mask) == (0, 2, 3, 4) and set(sp.all) == {0, 1, 2, 3, 4}
    assert sp.vocab_size == len(wordpiece) <= 300


def test_save_load_round_trip(tmp_path, wordpiece):
    save_tokenizer(wordpiece, tmp_path)
    assert {"tokenizer.json", "tokenizer_config.json", "vocab.txt"} <= {p.name for p in tmp_path.iterdir()}
    vocab = (tmp_path / "vocab.txt").read_text().splitlines()
    assert vocab[:5] == list(SPECIAL_TOKENS) and len(vocab) == len(wordpiece)
    back = AutoTokenizer.from_pretrained(tmp_path)
    text = "the quiet horse paints the bright window ."
    assert back(text)["input_ids"] == wordpiece(text)["input_ids"]
    assert back.model_max_length == 64
    assert tokenizer_digest(load_tokenizer(tmp_path)) == tokenizer_digest(back)


def test_bulk_encoder_matches_tokenizer_without_specials(wordpiece):
    text = "the old tree helps the quick child . the cat ."
    enc = encoder_for(wordpiece).encode_batch([text], add_special_tokens=False)[0].ids
    assert enc == wordpiece(text, add_special_tokens=False)["input_ids"]


def test_unloadable_tokenizer_is_a_clear_error(tmp_path):
    with pytest.raises(TrainerError, match=re.escape("data.tokenizer: expected 'wordpiece' or a local tokenizer")):
        load_tokenizer(tmp_path / "missing")
