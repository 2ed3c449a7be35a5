"""Packing (hand-laid rows), held-out split, cache, sampler, size errors."""

from __future__ import annotations

import numpy as np
import pytest

from trainer.data import RowPacker, RowSampler, check_sizes, holdout_every, prepare_data
from trainer.errors import TrainerError

CLS, SEP, PAD = 2, 3, 0


class _Sink:
    def __init__(self):
        self.rows = []

    def __call__(self, t, s):
        self.rows.append((t.tolist(), s.tolist()))


def test_packer_lays_segments_by_hand():
    sink = _Sink()
    p = RowPacker(10, cls_id=CLS, sep_id=SEP, pad_id=PAD, min_piece=2, sink=sink)
    p.add([11, 12, 13])          # [CLS] 11 12 13 [SEP]            -> 5 used, 5 left (3 content)
    p.add([21, 22, 23, 24, 25])  # 3 fit: [CLS] 21 22 23 [SEP]; rest continues in the next row
    p.add([31])                  # after [CLS] 24 25 [SEP] (4 used): [CLS] 31 [SEP]
    p.add([])                    # empty documents are skipped
    stats = p.finish()
    assert sink.rows[0] == ([2, 11, 12, 13, 3, 2, 21, 22, 23, 3], [1, 1, 1, 1, 1, 2, 2, 2, 2, 2])
    assert sink.rows[1] == ([2, 24, 25, 3, 2, 31, 3, 0, 0, 0], [1, 1, 1, 1, 2, 2, 2, 0, 0, 0])
    assert (stats.rows, stats.tokens, stats.documents, stats.segments) == (2, 9, 3, 4)


def test_packer_pads_instead_of_starting_a_too_short_piece():
    sink = _Sink()
    p = RowPacker(10, cls_id=CLS, sep_id=SEP, pad_id=PAD, min_piece=4, sink=sink)
    p.add([1, 1, 1, 1, 1])  # 7 used, 1 content slot left < min_piece -> pad, next doc starts a new row
    p.add([5, 6, 7, 8, 9, 10, 11, 12, 13])  # 9 tokens: 8 in the new row, 1 in the next
    p.finish()
    assert sink.rows[0] == ([2, 1, 1, 1, 1, 1, 3, 0, 0, 0], [1] * 7 + [0] * 3)
    assert sink.rows[1] == ([2, 5, 6, 7, 8, 9, 10, 11, 12, 3], [1] * 10)
    assert sink.rows[2] == ([2, 13, 3, 0, 0, 0, 0, 0, 0, 0], [1, 1, 1] + [0] * 7)


class _Encoding:
    def __init__(self, ids):
        self.ids = ids


class _WordEncoder:
    """A stand-in tokenizer: each whitespace word is its integer id."""

    def encode_batch(self, docs, add_special_tokens=False):
        assert not add_special_tokens
        return [_Encoding([int(w) for w in d.split()]) for d in docs]


def test_prepare_data_splits_caches_and_reopens(tmp_path):
    docs = [" ".join(str(10 + i) for _ in range(i % 7 + 1)) for i in range(40)]
    calls = []

    def documents():
        calls.append(1)
        return iter(docs)

    kw = {"corpus_spec": "test", "corpus_digest": "abc", "tokenizer_digest": "def", "seq_len": 16, "cls_id": CLS,
          "sep_id": SEP, "pad_id": PAD, "vocab_size": 100, "holdout": 0.1, "min_piece": 2}
    data = prepare_data(documents, _WordEncoder(), tmp_path, **kw)
    every = holdout_every(0.1)
    assert every == 10
    held_docs = [d for i, d in enumerate(docs) if i % every == 0]
    assert data.heldout.stats.documents == len(held_docs) == 4
    assert data.train.stats.documents == 36
    assert data.train.stats.tokens + data.heldout.stats.tokens == sum(len(d.split()) for d in docs)
    # held-out rows contain exactly the held-out documents' tokens, in order
    held_tokens = data.heldout.tokens[data.heldout.segments > 0]
    content = held_tokens[(held_tokens != CLS) & (held_tokens != SEP)]
    assert content.tolist() == [int(w) for d in held_docs for w in d.split()]
    assert data.train.tokens.dtype == np.uint16 and data.train.tokens.shape[1] == 16
    again = prepare_data(documents, _WordEncoder(), tmp_path, **kw)
    assert len(calls) == 1 and again.directory == data.directory
    other = prepare_data(documents, _WordEncoder(), tmp_path, **{**kw, "seq_len": 32})
    assert len(calls) == 2 and other.directory != data.directory


def test_check_sizes_reports_counts(tmp_path):
    docs = ["11 12 13", "14 15", "16 17 18 19"]
    data = prepare_data(lambda: iter(docs), _WordEncoder(), tmp_path, corpus_spec="t", corpus_digest="x",
                        tokenizer_digest="y", seq_len=16, cls_id=CLS, sep_id=SEP, pad_id=PAD, vocab_size=100,
                        holdout=0.5, min_piece=2)
    with pytest.raises(TrainerError) as err:
        check_sizes(data, corpus="tiny.txt", batch_size=4, seq_len=16)
    msg = str(err.value)
    assert "at least 56 training tokens" in msg and "9 tokens in 3 documents" in msg
    assert "lower train.batch_size" in msg


def test_sampler_is_a_pure_function_of_the_step():
    s1, s2 = RowSampler(10, global_batch=4, seed=3), RowSampler(10, global_batch=4, seed=3)
    steps = [s1.rows_for_step(i) for i in range(5)]
    assert all(np.array_equal(a, s2.rows_for_step(i)) for i, a in enumerate(steps))
    assert np.array_equal(s2.rows_for_step(3), steps[3])  # out of order: same answer
    flat = np.concatenate(steps)
    # 20 rows = two epochs, each a permutation of 0..9
    assert sorted(flat[:10].tolist()) == list(range(10)) and sorted(flat[10:].tolist()) == list(range(10))
    assert not np.array_equal(flat[:10], flat[10:])
    assert s1.epoch(5) == 2.0
