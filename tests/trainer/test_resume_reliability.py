"""Resume is keyed by what the run was trained on, not by how it was named, and never leaves a stuck directory:

* the corpus is identified by its content digest: the same file named by a relative path, an absolute path, a
  symlink or ``./x`` resumes on the same loss curve; a corpus whose content changed is refused, naming both hashes;
* a run killed before its first checkpoint can be restarted with or without ``--resume`` (it has nothing to lose);
* a directory holding files the trainer did not write is refused and left untouched.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

import trainer
import trainer.checkpoint as ckpt_mod
import trainer.loop as loop_mod
from trainer import PartialRunWarning, TrainerError, TrainerWarning
from trainer.corpus import open_corpus

from .conftest import SMALL, read_jsonl

#: Dropout on, a log row every step, a checkpoint every 2 steps: a resumed run must match to 1e-6.
EXACT = (*SMALL, "model.hidden_dropout=0.1", "model.attention_dropout=0.1", "train.log_every=1",
         "train.ckpt_every=2", "train.eval_every=4")
STEPS = 8
KEYS = ("loss", "loss_mlm", "loss_jepa", "w_mlm", "w_jepa", "grad_norm", "target_var", "tokens_seen")


class Killed(Exception):
    """Stands in for SIGKILL: raised from inside the run, it leaves the directory as a killed process would."""


def _train(corpus, out, *, resume=False, stop_at=None, overrides=EXACT):
    def progress(row):
        if stop_at is not None and row["step"] == stop_at:
            raise Killed

    return trainer.run("hybrid", "tiny", corpus, out, steps=STEPS, overrides=overrides, device="cpu",
                       resume=resume, progress=progress)


@pytest.fixture(scope="module")
def reference(corpus_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted run: every resumed or restarted run below must reproduce its logs."""
    out = tmp_path_factory.mktemp("reference") / "run"
    _train(corpus_file, out)
    return out


def _same_curve(out: Path, reference: Path) -> None:
    ref, got = read_jsonl(reference / "logs" / "train.jsonl"), read_jsonl(out / "logs" / "train.jsonl")
    assert [r["step"] for r in got] == list(range(1, STEPS + 1))
    for a, b in zip(ref, got, strict=True):
        for key in KEYS:
            assert b[key] == pytest.approx(a[key], rel=1e-6, abs=1e-7), (a["step"], key)
    evals = read_jsonl(out / "logs" / "eval.jsonl")
    assert [e["step"] for e in evals] == [0, 4, 8]
    assert [e["heldout_mlm_loss"] for e in evals] == pytest.approx(
        [e["heldout_mlm_loss"] for e in read_jsonl(reference / "logs" / "eval.jsonl")], rel=1e-6)


def _snapshot(root: Path) -> dict[str, bytes | None]:
    return {p.relative_to(root).as_posix(): (p.read_bytes() if p.is_file() else None) for p in root.rglob("*")}


# -- the corpus is its content, not its path ----------------------------------------------------------------------

def test_every_spelling_of_the_same_corpus_resumes_on_the_same_curve(corpus_file, tmp_path, monkeypatch, reference):
    """Killed three times, resumed each time under another name of the same file: identical to one run."""
    out = tmp_path / "run"
    link = tmp_path / "link.jsonl"
    link.symlink_to(corpus_file)
    monkeypatch.chdir(corpus_file.parent)
    assert not Path("toy.jsonl").is_absolute() and Path("toy.jsonl").resolve() == corpus_file.resolve()

    with pytest.raises(Killed):
        _train(corpus_file, out, stop_at=3)  # absolute path; the checkpoint at step 2 survives
    for spelling, stop_at, resumed_from in (("toy.jsonl", 5, 2), (link, 7, 4), ("./toy.jsonl", None, 6)):
        if stop_at is None:
            summary = _train(spelling, out, resume=True)
            assert summary.resumed_from == resumed_from and summary.steps == STEPS
        else:
            with pytest.raises(Killed):
                _train(spelling, out, resume=True, stop_at=stop_at)
            assert json.loads((out / "run.json").read_text())["latest"] == f"checkpoints/step-{stop_at - 1:07d}"
    _same_curve(out, reference)
    digest = open_corpus(corpus_file).digest
    run = json.loads((out / "run.json").read_text())
    assert run["corpus_digest"] == digest and run["corpus"] == "./toy.jsonl"  # the spelling last used
    saved = json.loads((out / run["latest"] / "trainer_config.json").read_text())
    assert saved["corpus_digest"] == digest


def test_changed_corpus_content_is_refused_naming_both_hashes(corpus_file, tmp_path):
    corpus = tmp_path / "toy.jsonl"
    shutil.copy(corpus_file, corpus)
    out = tmp_path / "run"
    with pytest.raises(Killed):
        _train(corpus, out, stop_at=3)
    before = open_corpus(corpus).digest
    lines = corpus.read_text().splitlines(keepends=True)
    corpus.write_text("".join(lines[:-1]).replace("cat", "dog", 1))  # one word edited, last document dropped
    after = open_corpus(corpus).digest
    assert before != after
    state = _snapshot(out)

    with pytest.raises(TrainerError) as err:
        _train(corpus, out, resume=True)
    msg = str(err.value)
    assert msg == (f"corpus: expected the corpus {str(out)!r} was trained on (sha256 {before[:12]}..., given as "
                   f"{str(corpus)!r}), got {str(corpus)!r} with sha256 {after[:12]}... (its content differs). "
                   "Restore the original corpus to resume, or start a new run in another --out.")
    assert _snapshot(out) == state  # refused before anything was written

    # the same file restored resumes; under a config change too, both are listed in one line
    with pytest.raises(TrainerError) as err:
        _train(corpus, out, resume=True, overrides=[*EXACT, "optim.lr=0.05"])
    assert f"corpus sha256: {before[:12]}... -> {after[:12]}...; optim.lr: 0.001 -> 0.05" in str(err.value)
    corpus.write_text("".join(lines))
    assert _train(corpus, out, resume=True).resumed_from == 2


def test_checkpoint_without_a_corpus_digest_is_checked_by_its_data_key(corpus_file, tmp_path):
    """Checkpoints written before digests were saved: the packed-data cache key in run.json covers the digest."""
    corpus = tmp_path / "toy.jsonl"
    shutil.copy(corpus_file, corpus)
    out = tmp_path / "run"
    with pytest.raises(Killed):
        _train(corpus, out, stop_at=3)
    cfg_path = out / "checkpoints" / "step-0000002" / "trainer_config.json"
    cfg = json.loads(cfg_path.read_text())
    del cfg["corpus_digest"]
    cfg_path.write_text(json.dumps(cfg))
    (cfg_path.parent / "trainer_manifest.json").unlink()  # such checkpoints had no manifest of file hashes either
    original = corpus.read_text()
    corpus.write_text(original.replace("cat", "dog", 1))
    with pytest.raises(TrainerError, match=r"^corpus: expected the corpus .* \(packed-data key [0-9a-f]{24}, which "
                       r"covers its sha256\), got .* \(key [0-9a-f]{24}: its content differs\)\. Restore the "
                       r"original corpus"):
        _train(corpus, out, resume=True)

    corpus.write_text(original)
    run = json.loads((out / "run.json").read_text())
    del run["data"]
    (out / "run.json").write_text(json.dumps(run))
    with pytest.warns(TrainerWarning, match="records no corpus digest"):
        assert _train(corpus, out, resume=True).resumed_from == 2


# -- a run killed before its first checkpoint ----------------------------------------------------------------------

def _kill_before_first_checkpoint(corpus_file: Path, out: Path, how: str, monkeypatch) -> None:
    """Leave ``out`` as a process killed before its first checkpoint leaves it."""
    if how == "while training":
        with pytest.raises(Killed):
            _train(corpus_file, out, stop_at=1)  # step 1 logged, the first checkpoint is at step 2
    elif how == "while writing the first checkpoint":
        real, calls = ckpt_mod.save_tensors, []

        def killed_mid_write(tensors, path, metadata=None):  # the model file is written, the trainer state not
            calls.append(path)
            if len(calls) == 2:
                raise Killed
            real(tensors, path, metadata)

        with monkeypatch.context() as m:
            m.setattr(ckpt_mod, "save_tensors", killed_mid_write)
            with pytest.raises(Killed):
                _train(corpus_file, out)
        assert [p.name[:17] for p in (out / "checkpoints").iterdir()] == [".tmp-step-0000002"]
    else:  # "before run.json": a fresh run stopped while the data was being prepared
        with monkeypatch.context() as m:
            m.setattr(loop_mod, "prepare_data", lambda *a, **k: (_ for _ in ()).throw(Killed()))
            with pytest.raises(Killed):
                _train(corpus_file, out)
        assert sorted(p.name for p in out.iterdir()) == ["tokenizer"]
    run = ckpt_mod.read_run_json(out)
    assert run is None or run["latest"] is None
    assert ckpt_mod.list_checkpoints(out) == []


HOW = ("while training", "while writing the first checkpoint", "before run.json")


@pytest.mark.parametrize("how", HOW)
def test_run_killed_before_its_first_checkpoint_restarts_without_resume(corpus_file, tmp_path, monkeypatch, how,
                                                                        reference):
    out = tmp_path / "run"
    _kill_before_first_checkpoint(corpus_file, out, how, monkeypatch)
    if (out / "run.json").is_file():  # a user's file beside a partial run (run.json: it is a run) is kept
        (out / "notes.txt").write_text("mine")
    with pytest.warns(PartialRunWarning, match=re.escape(f"out: {str(out)!r} holds a run that stopped before its "
                                                         "first checkpoint (")) as caught:
        summary = _train(corpus_file, out)
    assert "it has nothing to lose, so a new run replaces it" in str(caught[0].message)
    assert summary.resumed_from is None and summary.steps == STEPS
    _same_curve(out, reference)
    assert (out / "notes.txt").read_text() == "mine" if how != "before run.json" else not (out / "notes.txt").exists()
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [f"step-{s:07d}" for s in (4, 6, 8)]  # no temp


@pytest.mark.parametrize("how", HOW)
def test_run_killed_before_its_first_checkpoint_resumes_from_scratch(corpus_file, tmp_path, monkeypatch, how,
                                                                     reference):
    out = tmp_path / "run"
    _kill_before_first_checkpoint(corpus_file, out, how, monkeypatch)
    with pytest.warns(PartialRunWarning, match=re.escape(f"resume: {str(out)!r} holds a run that stopped before")) \
            as caught:
        summary = _train(corpus_file, out, resume=True)
    assert "so there is nothing to resume; starting it again from step 0" in str(caught[0].message)
    assert summary.resumed_from is None and summary.steps == STEPS
    _same_curve(out, reference)
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "complete" and run["latest"] == "checkpoints/step-0000008"


def test_checkpoint_renamed_but_not_yet_in_run_json_is_resumed(corpus_file, tmp_path, monkeypatch, reference):
    """Killed between the checkpoint's rename and the run.json update: the complete checkpoint is the run."""
    out = tmp_path / "run"
    real = loop_mod.update_run_json

    def killed_on_first_checkpoint(out_dir, fields):
        if "checkpoints" in fields:
            raise Killed
        return real(out_dir, fields)

    with monkeypatch.context() as m:
        m.setattr(loop_mod, "update_run_json", killed_on_first_checkpoint)
        with pytest.raises(Killed):
            _train(corpus_file, out)
    assert json.loads((out / "run.json").read_text())["latest"] is None
    with pytest.raises(TrainerError, match=r"already holds a run \(run.json, checkpoint checkpoints/step-0000002\)"):
        _train(corpus_file, out)
    assert _train(corpus_file, out, resume=True).resumed_from == 2
    _same_curve(out, reference)


# -- what is not a (resumable) run is refused and left alone --------------------------------------------------------

@pytest.mark.parametrize("layout", [
    {"notes.txt": "mine", "data/x.csv": "1,2"},
    {"tokenizer/vocab.txt": "[PAD]", "notes.txt": "mine"},  # a tokenizer alone is a partial run; not with a file
    {"logs/mine.log": "x", "tokenizer/vocab.txt": "[PAD]"},
    {"checkpoints/final.bin": "weights"},
])
def test_foreign_directory_is_refused_and_left_untouched(corpus_file, tmp_path, layout):
    out = tmp_path / "mine"
    for rel, text in layout.items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_text(text)
    before = _snapshot(out)
    with pytest.raises(TrainerError) as err:
        _train(corpus_file, out)
    msg = str(err.value)
    assert msg.startswith(f"out: expected a new or empty directory (or a trainer run), got {str(out)!r}, which holds ")
    assert msg.endswith("(no run.json). Choose another --out (the trainer never deletes files it did not write).")
    assert "\n" not in msg
    with pytest.raises(TrainerError, match=re.escape(
            f"resume: expected an --out holding a run with at least one checkpoint, got {str(out)!r}, which holds ")):
        _train(corpus_file, out, resume=True)
    assert _snapshot(out) == before


def test_foreign_entries_are_named(corpus_file, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    for name in ("a.txt", "b.txt", "c.txt", "d.txt"):
        (out / name).write_text("x")
    with pytest.raises(TrainerError, match=re.escape("which holds 'a.txt', 'b.txt', 'c.txt' and 1 more (no run.json)")):
        _train(corpus_file, out)


def test_run_whose_checkpoint_was_deleted_is_refused_both_ways(corpus_file, tmp_path):
    out = tmp_path / "run"
    trainer.run("mlm", "tiny", corpus_file, out, steps=2, device="cpu", overrides=SMALL)
    shutil.rmtree(out / "checkpoints")
    before = _snapshot(out)
    for resume, name in ((False, "out"), (True, "resume")):
        with pytest.raises(TrainerError) as err:
            trainer.run("mlm", "tiny", corpus_file, out, steps=2, device="cpu", overrides=SMALL, resume=resume)
        assert str(err.value) == (
            f"{name}: expected a run directory with an intact checkpoint, got {str(out)!r}, whose run.json names "
            "checkpoints/step-0000002, which is missing or incomplete. Restore the checkpoint (or run.json), or "
            "start a new run in another --out.")
    assert _snapshot(out) == before  # the logs of the finished run are kept


def test_resume_into_a_missing_or_empty_directory_is_refused(corpus_file, tmp_path):
    with pytest.raises(TrainerError, match=re.escape(f"got {str(tmp_path / 'nothing')!r} (no such directory). "
                                                     "Point --out at the run to continue, or start it without")):
        _train(corpus_file, tmp_path / "nothing", resume=True)
    (tmp_path / "empty").mkdir()
    with pytest.raises(TrainerError, match=re.escape("(an empty directory)")):
        _train(corpus_file, tmp_path / "empty", resume=True)
    assert not (tmp_path / "nothing").exists() and not any((tmp_path / "empty").iterdir())


def test_partial_run_warning_is_a_trainer_warning_and_never_printed(corpus_file, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    _kill_before_first_checkpoint(corpus_file, out, "while training", monkeypatch)
    assert issubclass(PartialRunWarning, TrainerWarning) and issubclass(TrainerWarning, UserWarning)
    with pytest.warns(PartialRunWarning):
        trainer.run("mlm", "tiny", corpus_file, out, steps=1, device="cpu", overrides=SMALL)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""
    assert os.path.isdir(out / "checkpoints" / "step-0000001")


# -- training in chunks ----------------------------------------------------------------------------------------

def test_stop_after_trains_in_chunks_on_the_same_curve(corpus_file, tmp_path, reference):
    """train.stop_after=3 stops at step 3 with an evaluation and a checkpoint, status "stopped"; resuming with a
    later stop and then with none reproduces the uninterrupted run (schedules span train.steps throughout)."""
    out = tmp_path / "run"
    first = _train(corpus_file, out, overrides=(*EXACT, "train.stop_after=3"))
    run = json.loads((out / "run.json").read_text())
    assert first.steps == 3 and run["status"] == "stopped" and run["latest"] == "checkpoints/step-0000003"
    assert [e["step"] for e in read_jsonl(out / "logs" / "eval.jsonl")] == [0, 3]
    second = _train(corpus_file, out, resume=True, overrides=(*EXACT, "train.stop_after=6"))
    assert second.resumed_from == 3 and second.steps == 6
    assert json.loads((out / "run.json").read_text())["status"] == "stopped"
    last = _train(corpus_file, out, resume=True)
    assert last.resumed_from == 6 and last.steps == STEPS
    assert json.loads((out / "run.json").read_text())["status"] == "complete"
    ref = read_jsonl(reference / "logs" / "train.jsonl")
    got = read_jsonl(out / "logs" / "train.jsonl")
    assert [r["step"] for r in got] == list(range(1, STEPS + 1))
    for a, b in zip(ref, got, strict=True):
        for key in KEYS:
            assert b[key] == pytest.approx(a[key], rel=1e-6, abs=1e-7), (a["step"], key)
    with pytest.raises(TrainerError, match=r"train\.stop_after"):
        _train(corpus_file, tmp_path / "bad", overrides=(*EXACT, "train.stop_after=-1"))
