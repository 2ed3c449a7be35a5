"""Data specs: GLUE (official TSV layout, written here), files, the sample suite, subsampling."""

from __future__ import annotations

import json

import numpy as np
import pytest

from embedgeom.data import DataError, load_texts, subsample


@pytest.fixture
def glue_dir(tmp_path):
    """A miniature of the official GLUE layout with the real files' column formats."""
    root = tmp_path / "glue"
    (root / "SST-2").mkdir(parents=True)
    (root / "SST-2" / "dev.tsv").write_text("sentence\tlabel\nit 's a charming journey .\t1\n"
                                            "unflinchingly bleak .\t0\na gorgeous , witty film .\t1\n"
                                            "unflinchingly bleak .\t0\n")
    (root / "CoLA").mkdir()
    (root / "CoLA" / "dev.tsv").write_text("gj04\t1\t\tThe sailors rode the breeze clear of the rocks.\n"
                                           "gj04\t0\t*\tThe more we study verbs, the crazier they get get.\n"
                                           "gj04\t1\t\tDay by day the facts are getting murkier.\n")
    (root / "MRPC").mkdir()
    (root / "MRPC" / "dev.tsv").write_text(
        "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
        "1\t1\t2\tHe said the food was fine.\tThe food was fine, he said.\n"
        "0\t3\t4\tShares rose 5 percent.\tThe weather was cold.\n"
        "1\t5\t6\tThe cat slept.\tThe cat was asleep.\n")
    (root / "STS-B").mkdir()
    (root / "STS-B" / "dev.tsv").write_text(
        "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
        "0\tmain-captions\tMSRvid\t2012test\t0000\tnone\tnone\tA man is playing a flute.\tA man plays the flute.\t4.8\n"
        "1\tmain-captions\tMSRvid\t2012test\t0001\tnone\tnone\tA dog runs.\tA woman cooks rice.\t0.2\n"
        "2\tmain-captions\tMSRvid\t2012test\t0002\tnone\tnone\tA man is playing a flute.\tSomeone plays music.\t3.0\n")
    (root / "MNLI").mkdir()
    head = ("index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\tsentence1_parse\t"
            "sentence2_parse\tsentence1\tsentence2\tlabel1\tgold_label\n")
    rows = [("The cat sat.", "A cat was sitting.", "entailment"), ("The cat sat.", "The cat ran.", "contradiction"),
            ("The cat sat.", "It was noon.", "neutral"), ("Rain fell.", "It was wet.", "-")]
    body = "".join(f"{i}\t0\t0\tfiction\t()\t()\t()\t()\t{a}\t{b}\t{g}\t{g}\n" for i, (a, b, g) in enumerate(rows))
    (root / "MNLI" / "dev_matched.tsv").write_text(head + body)
    return root


def test_glue_single_sentence_tasks(glue_dir):
    sst = load_texts("glue:sst2", glue_dir=glue_dir)
    assert sst.texts == ("it 's a charming journey .", "unflinchingly bleak .", "a gorgeous , witty film .")
    assert sst.labels.tolist() == [1, 0, 1] and sst.info["duplicates_removed"] == 1
    assert sst.label_names == ("negative", "positive") and len(sst.positives) == 0
    cola = load_texts("glue:cola", glue_dir=glue_dir)
    assert cola.labels.tolist() == [1, 0, 1] and cola.n == 3


def test_glue_pair_tasks_and_positive_rules(glue_dir):
    mrpc = load_texts("glue:mrpc", glue_dir=glue_dir)
    assert mrpc.pairs.shape == (3, 2) and mrpc.pair_labels.tolist() == [1, 0, 1]
    assert len(mrpc.positives) == 2 and "paraphrase" in mrpc.positive_rule
    a, b = mrpc.positives[0]
    assert (mrpc.texts[a], mrpc.texts[b]) == ("He said the food was fine.", "The food was fine, he said.")
    sts = load_texts("glue:stsb", glue_dir=glue_dir)
    assert sts.pair_task == "regression" and sts.pair_labels.tolist() == [4.8, 0.2, 3.0]
    assert len(sts.positives) == 1 and ">= 4.0" in sts.positive_rule
    assert sts.n == 5  # the repeated sentence is stored once, both pairs point at it
    assert sts.pairs[0, 0] == sts.pairs[2, 0]
    mnli = load_texts("glue:mnli", glue_dir=glue_dir)
    assert mnli.pair_labels.tolist() == [0, 2, 1]  # the '-' (no gold label) row is dropped
    assert len(mnli.positives) == 1 and mnli.split == "validation"


def test_glue_missing_file_names_the_expected_path(tmp_path):
    with pytest.raises(DataError, match=r"SST-2/dev.tsv"):
        load_texts("glue:sst2", glue_dir=tmp_path)
    with pytest.raises(DataError, match="glue:"):
        load_texts("glue:squad", glue_dir=tmp_path)


def test_text_files(tmp_path):
    (tmp_path / "a.txt").write_text("first line\n\nsecond line\nfirst line\n")
    ts = load_texts(str(tmp_path / "a.txt"))
    assert ts.texts == ("first line", "second line") and ts.info["empty_removed"] == 1
    (tmp_path / "b.csv").write_text("body,topic\nhello there,x\ngeneral kenobi,y\n")
    with pytest.raises(DataError, match=r"found columns \['body', 'topic'\]"):
        load_texts(str(tmp_path / "b.csv"))
    ts = load_texts(f"{tmp_path / 'b.csv'}?text=body&label=topic")
    assert ts.labels.tolist() == [0, 1] and ts.label_names == ("x", "y")
    with pytest.raises(DataError, match="'nope'"):
        load_texts(f"{tmp_path / 'b.csv'}?text=nope")
    (tmp_path / "c.jsonl").write_text("\n".join(json.dumps(r) for r in [
        {"sentence1": "a b", "sentence2": "a c", "label": 1}, {"sentence1": "x", "sentence2": "y", "label": 0}]))
    ts = load_texts(str(tmp_path / "c.jsonl"))
    assert ts.pairs.shape == (2, 2) and len(ts.positives) == 1
    (tmp_path / "d.tsv").write_text("text\tscore\nfoo\t1\n")
    with pytest.raises(DataError, match="1 usable"):
        load_texts(str(tmp_path / "d.tsv"))
    with pytest.raises(DataError, match="does not exist"):
        load_texts(str(tmp_path / "missing.csv"))


def test_sample_suite_sources():
    bbc = load_texts("sample:bbc")
    assert len(bbc.label_names) == 5 and bbc.n > 2000 and bbc.info["duplicates_removed"] > 0
    pol = load_texts("sample:polarity")
    assert pol.n == 200 and int(pol.labels.sum()) == 100
    lee = load_texts("sample:lee")
    assert lee.n == 50 and lee.pairs.shape == (1225, 2) and lee.pair_task == "regression"
    assert (lee.pair_labels[[tuple(p) in {tuple(q) for q in lee.positives.tolist()} for p in lee.pairs.tolist()]]
            >= 0.6).all()
    ws = load_texts("sample:wordsim")
    assert ws.pairs.shape == (353, 2) and 0 < len(ws.positives) < 100
    wiki = load_texts("sample:wiki")
    assert wiki.n > 3000 and len(wiki.positives) > 3000
    assert all(len(t.split()) >= 25 for t in wiki.texts[:50])
    pairs = load_texts("sample:bbc-pairs")
    assert len(pairs.positives) == len(pairs.pairs) == 2225


def test_subsampling_is_seeded_and_keeps_structure():
    wiki = load_texts("sample:wiki")
    a = load_texts("sample:wiki", max_texts=500, seed=3)
    b = load_texts("sample:wiki", max_texts=500, seed=3)
    c = load_texts("sample:wiki", max_texts=500, seed=4)
    assert a.texts == b.texts and a.texts != c.texts and a.n == 500
    index = {t: i for i, t in enumerate(wiki.texts)}
    for i, j in a.positives.tolist():
        assert index[a.texts[j]] - index[a.texts[i]] == 1  # still consecutive paragraphs
    lee = load_texts("sample:lee", max_texts=100, seed=0)
    assert lee.pairs.shape == (100, 2) and lee.pairs.max() < lee.n
    assert lee.info["subsample"] == {"max_texts": 100, "seed": 0, "n_before": 1225}
    assert subsample(lee, 5000, 0) is lee


def test_bad_specs():
    with pytest.raises(DataError, match="sample:"):
        load_texts("sample:nope")
    with pytest.raises(DataError, match="max_texts"):
        load_texts("sample:polarity", max_texts=1)
    with pytest.raises(DataError, match="spec"):
        load_texts("")


def test_content_hash_is_stable_and_sensitive():
    a = load_texts("sample:polarity")
    assert a.content_hash == load_texts("sample:polarity").content_hash
    assert a.content_hash != load_texts("sample:polarity", max_texts=100).content_hash
    card = a.card()
    assert card["n_texts"] == 200 and card["content_hash"] == a.content_hash
    assert np.array_equal(a.labels, load_texts("sample:polarity").labels)


# --- raw rows (before de-duplication) and file errors ---------------------------------------------------

def test_load_rows_keeps_source_order_and_duplicates(glue_dir):
    from embedgeom.data import load_rows

    sst = load_rows("glue:sst2", glue_dir=glue_dir)
    assert sst.texts == ("it 's a charming journey .", "unflinchingly bleak .", "a gorgeous , witty film .",
                         "unflinchingly bleak .")
    assert sst.labels.tolist() == [1, 0, 1, 0] and sst.task == "classification" and not sst.is_pair
    sts = load_rows("glue:stsb", glue_dir=glue_dir)
    assert sts.text_pairs[1] == "A woman cooks rice." and sts.labels.tolist() == [4.8, 0.2, 3.0]
    assert sts.task == "regression" and sts.source == "glue-tsv"
    mnli = load_rows("glue:mnli", glue_dir=glue_dir)
    assert mnli.n == 3 and mnli.info["rows_without_gold_label"] == 1


def test_file_encoding_option_and_undecodable_files(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_bytes("first line\nsecond line\ncaf\u00e9 cr\u00e8me\n".encode("cp1252"))
    with pytest.raises(DataError, match=r"notes.txt is not UTF-8 \(invalid byte 0xe9 at line 3\): pass "
                                        r".*notes.txt\?encoding=cp1252 \(or the file's encoding\)"):
        load_texts(str(path))
    ts = load_texts(f"{path}?encoding=cp1252")
    assert ts.texts[2] == "caf\u00e9 cr\u00e8me"
    with pytest.raises(DataError, match=r"encoding 'klingon' .* is not a codec Python knows"):
        load_texts(f"{path}?encoding=klingon")
    bom = tmp_path / "bom.csv"
    bom.write_bytes("\ufefftext,label\nhello,a\nthere,b\n".encode())
    assert load_texts(str(bom)).label_names == ("a", "b")  # the byte-order mark is not part of the header


def test_malformed_csv_and_jsonl_name_file_line_and_fix(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("text,label\nhello there,x\nwell, hello,y\nfine,z\n")
    with pytest.raises(DataError, match=r"bad.csv line 3 has 3 field\(s\) but the header has 2 \(text, label\): "
                                        "quote fields that contain ','"):
        load_texts(str(bad))
    short = tmp_path / "short.tsv"
    short.write_text("text\tlabel\na\tx\nb\n")
    with pytest.raises(DataError, match=r"short.tsv line 3 has 1 field\(s\)"):
        load_texts(str(short))
    js = tmp_path / "bad.jsonl"
    js.write_text('{"text": "a", "label": 1}\n\n{"text": "b", "label": 2\n')
    with pytest.raises(DataError, match=r"bad.jsonl line 3 is not JSON .*: write one JSON object per line"):
        load_texts(str(js))
    js.write_text('{"text": "a", "label": 1}\n["b", 2]\n')
    with pytest.raises(DataError, match=r"line 2 is a JSON list, expected an object"):
        load_texts(str(js))
    js.write_text('{"text": "a", "label": 1}\n{"text": "b", "label": 2}\n{"body": "c", "label": 1}\n')
    with pytest.raises(DataError, match=r"bad.jsonl line 3 has no 'text' field \(1 row\(s\) lack it\): add it to "
                                        r"every row, or choose another column with .*bad.jsonl\?text=COLUMN"):
        load_texts(str(js))


def test_glue_tsv_short_row_names_the_line(glue_dir):
    path = glue_dir / "STS-B" / "dev.tsv"
    path.write_text(path.read_text() + "3\tmain-captions\tMSRvid\n")
    with pytest.raises(DataError, match=r"dev.tsv line 5 has 3 field\(s\), expected at least 10"):
        load_texts("glue:stsb", glue_dir=glue_dir)
