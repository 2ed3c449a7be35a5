"""Nothing lost, nothing invented: each case as a user meets it.

* a checkpoint carries the sha256 of every file (``trainer_manifest.json``); an edited step, a truncated or altered
  file, or non-finite weights make it *damaged*, named with its step and file;
* ``--resume`` continues from the newest intact checkpoint and says which it skipped; none intact is one error;
* the "last good checkpoint" of a diverged run is never one with non-finite weights, and none is ever written;
* a full disk or a permission error while checkpointing leaves no temporary directory and names the path and errno;
  temporaries of a killed process are cleared when the run resumes;
* a corpus that is not UTF-8 is refused naming the file, line, byte offset and fix; ``?encoding=`` reads it.
"""

from __future__ import annotations

import errno
import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import trainer
import trainer.checkpoint as ckpt_mod
import trainer.loop as loop_mod
from trainer import CheckpointDamaged, CheckpointWriteError, DamagedCheckpointWarning, TrainerError, TrainingDiverged
from trainer.cli import main as cli_main

from .conftest import SMALL, synthetic_documents

OVERRIDES = (*SMALL, "train.ckpt_every=2", "train.keep_last=5", "train.log_every=1")
STEPS = 4


def _train(corpus, out, *, resume=False, steps=STEPS, overrides=OVERRIDES, progress=None):
    return trainer.run("mlm", "tiny", corpus, out, steps=steps, overrides=overrides, device="cpu", resume=resume,
                       progress=progress)


@pytest.fixture(scope="module")
def pristine(corpus_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 4-step run with checkpoints at steps 2 and 4; every test damages a copy of it."""
    out = tmp_path_factory.mktemp("pristine") / "run"
    _train(corpus_file, out)
    return out


@pytest.fixture
def run_copy(pristine: Path, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(pristine, out)
    return out


def _ckpt(out: Path, step: int) -> Path:
    return out / "checkpoints" / f"step-{step:07d}"


def _snapshot(root: Path) -> dict[str, bytes | None]:
    return {p.relative_to(root).as_posix(): (p.read_bytes() if p.is_file() else None) for p in root.rglob("*")}


def _truncate(path: Path) -> int:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return len(data)


def _edit_step(ckpt: Path, step: int) -> None:
    state = json.loads((ckpt / "trainer_state.json").read_text())
    state["step"] = step
    (ckpt / "trainer_state.json").write_text(json.dumps(state, indent=2) + "\n")


def _rehash(ckpt: Path) -> None:
    """Rewrite the manifest for the files as they are now (a checkpoint written so by a trainer without checks)."""
    (ckpt / "trainer_manifest.json").write_text(json.dumps(ckpt_mod._manifest(ckpt, ckpt_mod.checkpoint_step(ckpt))))


# -- what a checkpoint records ---------------------------------------------------------------------------------------

def test_every_checkpoint_records_the_sha256_of_each_file(pristine):
    from embedgeom.storage import file_digest

    ckpt = _ckpt(pristine, 4)
    manifest = json.loads((ckpt / "trainer_manifest.json").read_text())
    assert manifest["format"] == "embedgeom-trainer-manifest" and manifest["step"] == 4
    names = {p.name for p in ckpt.iterdir()} - {"trainer_manifest.json"}
    assert set(manifest["files"]) == names and {"model.safetensors", "trainer_state.json", "config.json"} <= names
    for name, entry in manifest["files"].items():
        assert entry == {"sha256": file_digest(ckpt / name), "bytes": (ckpt / name).stat().st_size}
    model, config, tensors, meta = ckpt_mod.read_checkpoint(ckpt)  # intact: reads without complaint
    assert meta["step"] == 4 and "bert.embeddings.word_embeddings.weight" in model and tensors and config


# -- an edited step ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("manifest", [True, False], ids=["with-hashes", "before-hashes"])
def test_edited_step_in_trainer_state_is_refused_naming_the_file_and_both_steps(corpus_file, run_copy, manifest):
    """Only one checkpoint, its step edited from 4 to 1: it would resume on step 1's schedule; it is refused."""
    out = run_copy
    shutil.rmtree(_ckpt(out, 2))
    if not manifest:
        (_ckpt(out, 4) / "trainer_manifest.json").unlink()
    _edit_step(_ckpt(out, 4), 1)
    before = _snapshot(out)
    with pytest.raises(TrainerError) as err:
        _train(corpus_file, out, resume=True)
    msg = str(err.value)
    assert msg.startswith(f"resume: expected an intact checkpoint in {str(out)!r}, got none: checkpoints/step-0000004 "
                          "(step 4) is damaged (trainer_state.json: records step 1, but the directory step-0000004 is "
                          "step 4")
    assert ("trainer_state.json: its content differs from the sha256 recorded in trainer_manifest.json" in msg) \
        is manifest
    assert msg.endswith("Restore a checkpoint from a backup, or start a new run in another --out.")
    assert "\n" not in msg
    assert _snapshot(out) == before  # refused before anything was written


def test_edited_step_in_the_newest_checkpoint_resumes_from_the_previous_one(corpus_file, run_copy):
    _edit_step(_ckpt(run_copy, 4), 3)
    with pytest.warns(DamagedCheckpointWarning) as caught:
        summary = _train(corpus_file, run_copy, resume=True)
    msg = str(caught[0].message)
    assert msg.startswith("resume: checkpoints/step-0000004 (step 4) is damaged (trainer_state.json: records step 3, "
                          "but the directory step-0000004 is step 4;")
    assert "continuing from the newest intact checkpoint, checkpoints/step-0000002 (step 2)" in msg
    assert summary.resumed_from == 2 and summary.steps == STEPS
    ckpt_mod.read_checkpoint(_ckpt(run_copy, 4))  # rewritten by the resumed run: intact again


# -- truncated or altered files ------------------------------------------------------------------------------------

def test_truncated_model_resumes_from_the_previous_checkpoint_and_says_so(corpus_file, run_copy, pristine, capsys):
    """As on the command line: the warning names the damaged step and file and the checkpoint used; the run then
    reproduces the lost checkpoint exactly."""
    size = _truncate(_ckpt(run_copy, 4) / "model.safetensors")
    argv = ["--objective", "mlm", "--corpus", str(corpus_file), "--out", str(run_copy), "--steps", str(STEPS),
            "--resume", "-q", *[a for o in OVERRIDES for a in ("--set", o)]]
    assert cli_main(argv) == 0
    err = capsys.readouterr().err
    warning = [line for line in err.splitlines() if line.startswith("warning: resume:")]
    assert len(warning) == 1, err
    assert warning[0].startswith(
        f"warning: resume: checkpoints/step-0000004 (step 4) is damaged (model.safetensors: truncated or edited: "
        f"{size // 2:,} "
        f"of the {size:,} bytes recorded in trainer_manifest.json); continuing from the newest intact checkpoint, "
        "checkpoints/step-0000002 (step 2).")
    assert json.loads((run_copy / "run.json").read_text())["latest"] == "checkpoints/step-0000004"
    redone, original = load_file(_ckpt(run_copy, 4) / "model.safetensors"), load_file(
        _ckpt(pristine, 4) / "model.safetensors")
    for k in original:
        torch.testing.assert_close(redone[k], original[k], rtol=1e-6, atol=1e-7)


def test_truncated_checkpoint_written_before_hashes_is_still_caught(corpus_file, run_copy):
    (_ckpt(run_copy, 4) / "trainer_manifest.json").unlink()
    (_ckpt(run_copy, 2) / "trainer_manifest.json").unlink()  # an old run: no checkpoint has hashes
    _truncate(_ckpt(run_copy, 4) / "trainer_state.safetensors")
    with pytest.warns(DamagedCheckpointWarning, match=re.escape(
            "checkpoints/step-0000004 (step 4) is damaged (trainer_state.safetensors: unreadable (")):
        assert _train(corpus_file, run_copy, resume=True).resumed_from == 2


def test_every_checkpoint_damaged_is_one_clear_error(corpus_file, run_copy):
    _truncate(_ckpt(run_copy, 4) / "model.safetensors")
    state = _ckpt(run_copy, 2) / "trainer_state.safetensors"
    data = bytearray(state.read_bytes())
    data[-1] ^= 0xFF  # one flipped bit pattern in the last byte: same size, other content
    state.write_bytes(bytes(data))
    before = _snapshot(run_copy)
    with pytest.raises(TrainerError) as err:
        _train(corpus_file, run_copy, resume=True)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("resume: expected an intact checkpoint in ")
    assert "checkpoints/step-0000004 (step 4) is damaged (model.safetensors: truncated or edited: " in msg
    assert ("checkpoints/step-0000002 (step 2) is damaged (trainer_state.safetensors: its content differs from the "
            "sha256 recorded in trainer_manifest.json") in msg
    assert _snapshot(run_copy) == before


def test_damage_names_the_step_and_every_file(run_copy):
    ckpt = _ckpt(run_copy, 4)
    (ckpt / "vocab.txt").unlink()
    _truncate(ckpt / "model.safetensors")
    with pytest.raises(CheckpointDamaged) as err:
        ckpt_mod.read_checkpoint(ckpt)
    e = err.value
    assert e.step == 4 and e.checkpoint == ckpt
    assert [f for f, _ in e.problems] == ["model.safetensors", "vocab.txt"]
    assert "vocab.txt: missing (listed in trainer_manifest.json)" in str(e)


# -- non-finite weights ------------------------------------------------------------------------------------------------

def test_checkpoint_with_nan_weights_is_never_the_last_good_one(corpus_file, run_copy):
    """A checkpoint whose weights are NaN (its hashes consistent, as a trainer without the check wrote it): not the
    last good checkpoint, and --resume passes over it, naming the tensor."""
    ckpt = _ckpt(run_copy, 4)
    weights = load_file(ckpt / "model.safetensors")
    weights["bert.encoder.layer.0.output.dense.weight"][0, :3] = float("nan")
    save_file(weights, str(ckpt / "model.safetensors"), metadata={"format": "pt"})
    _rehash(ckpt)
    assert ckpt_mod.latest_checkpoint(run_copy) == ckpt  # what run.json names ...
    assert ckpt_mod.newest_intact_checkpoint(run_copy) == _ckpt(run_copy, 2)  # ... is not the last good one
    with pytest.warns(DamagedCheckpointWarning, match=re.escape(
            "(model.safetensors: tensor 'bert.encoder.layer.0.output.dense.weight' holds 3 non-finite values (NaN "
            "or inf)); continuing from the newest intact checkpoint, checkpoints/step-0000002 (step 2)")):
        assert _train(corpus_file, run_copy, resume=True).resumed_from == 2


def test_nan_weights_during_training_stop_the_run_without_writing_a_checkpoint(corpus_file, tmp_path, monkeypatch):
    """NaN in a weight no loss reads (BERT's pooler, saved but never trained): the losses stay finite, the
    checkpoint at step 4 is refused, and the last good checkpoint named is step 2."""
    engines = []
    real = loop_mod.engine_from_config

    def capture(*args, **kwargs):
        engines.append(real(*args, **kwargs))
        return engines[-1]

    def poison(row):
        if row["step"] == 3:
            with torch.no_grad():
                engines[0].student.pooler.dense.weight[0, 0] = float("nan")

    monkeypatch.setattr(loop_mod, "engine_from_config", capture)
    out = tmp_path / "run"
    with pytest.raises(TrainingDiverged) as err:
        _train(corpus_file, out, steps=6, progress=poison)
    e = err.value
    assert e.step == 4 and e.last_checkpoint == _ckpt(out, 2)
    assert "'pooler.dense.weight': 1 NaN or inf" in str(e) and "no checkpoint was written for step 4" in str(e)
    assert f"last good checkpoint: {_ckpt(out, 2)}" in str(e)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-0000002"]


# -- a full disk, a permission error, a killed write -----------------------------------------------------------------

@pytest.mark.parametrize(("code", "meaning", "fix"), [
    (errno.ENOSPC, "ENOSPC, no space left on device: the disk is full", "Free space or choose another --out"),
    (errno.EACCES, "EACCES, permission denied", "writable or choose another --out"),
])
def test_write_error_while_checkpointing_leaves_no_temporary_and_names_the_path(corpus_file, tmp_path, monkeypatch,
                                                                              code, meaning, fix):
    real = ckpt_mod.save_tensors
    calls = []

    def failing(tensors, path, metadata=None):
        calls.append(path)
        if len(calls) == 3:  # the second checkpoint's model file: half written, then the disk is full
            path.write_bytes(b"\0" * 4096)
            raise OSError(code, "simulated")
        real(tensors, path, metadata)

    monkeypatch.setattr(ckpt_mod, "save_tensors", failing)
    out = tmp_path / "run"
    with pytest.raises(CheckpointWriteError) as err:
        _train(corpus_file, out)
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith(f"checkpoint at step 4: writing {_ckpt(out, 4)} failed at {calls[2]} ({meaning}); its "
                          f"temporary directory was removed; the previous checkpoint {_ckpt(out, 2)} is intact. ")
    assert fix in msg and err.value.previous == _ckpt(out, 2)
    assert calls[2].parent.name.startswith(".tmp-step-0000004-")
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-0000002"]  # no temporary left
    assert json.loads((out / "run.json").read_text())["latest"] == "checkpoints/step-0000002"
    monkeypatch.setattr(ckpt_mod, "save_tensors", real)
    assert _train(corpus_file, out, resume=True).resumed_from == 2  # space freed: the run continues


def test_full_disk_while_updating_run_json_keeps_the_written_checkpoint(corpus_file, tmp_path, monkeypatch):
    real = loop_mod.update_run_json

    def full(out_dir, fields):
        if fields.get("latest") == "checkpoints/step-0000004":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(out_dir, fields)

    monkeypatch.setattr(loop_mod, "update_run_json", full)
    out = tmp_path / "run"
    with pytest.raises(CheckpointWriteError) as err:
        _train(corpus_file, out)
    assert str(err.value).startswith(f"checkpoint at step 4: {_ckpt(out, 4)} is complete, but updating "
                                     f"{out / 'run.json'} failed (ENOSPC, no space left on device: the disk is full)")
    assert json.loads((out / "run.json").read_text())["latest"] == "checkpoints/step-0000002"
    monkeypatch.setattr(loop_mod, "update_run_json", real)
    assert _train(corpus_file, out, resume=True).resumed_from == 4  # as the message says: resume finds it


def test_safetensors_io_error_becomes_an_os_error_naming_the_file(tmp_path):
    target = tmp_path / "missing-dir" / "model.safetensors"
    with pytest.raises(OSError) as err:
        ckpt_mod.save_tensors({"w": torch.zeros(2)}, target)
    assert err.value.errno == errno.ENOENT and err.value.filename == str(target)


def test_temporaries_of_a_killed_run_are_cleared_when_it_resumes(corpus_file, run_copy):
    root = run_copy / "checkpoints"
    (root / ".tmp-step-0000006-4242").mkdir()
    (root / ".tmp-step-0000006-4242" / "model.safetensors").write_bytes(b"\0" * 1000)
    (run_copy / ".write-test-4242").write_text("ok")
    (run_copy / ".run.json.4242.tmp").write_text("{")
    # killed between the two renames that replace step 4: only its .old copy exists (and step 2 was pruned)
    _ckpt(run_copy, 4).rename(root / ".old-step-0000004-4242")
    shutil.rmtree(_ckpt(run_copy, 2))
    summary = _train(corpus_file, run_copy, resume=True)
    assert summary.resumed_from == 4  # the .old copy was put back, not deleted
    assert sorted(p.name for p in root.iterdir()) == ["step-0000004"]
    assert not list(run_copy.glob(".*"))


# -- the corpus's encoding ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def latin1_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("latin1") / "caf\u00e9.txt"
    docs = [d.replace("cat", "ch\u00e2t") for d in synthetic_documents(600)]
    path.write_bytes("\n".join(docs).encode("latin-1"))
    return path


def test_non_utf8_corpus_is_refused_naming_file_line_offset_and_fix(latin1_corpus, tmp_path, capsys):
    raw = latin1_corpus.read_bytes()
    offset = raw.index(b"\xe2")
    line = raw[:offset].count(b"\n") + 1
    argv = ["--objective", "mlm", "--corpus", str(latin1_corpus), "--out", str(tmp_path / "run"), "--steps", "2"]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert err == (f"error: corpus: {latin1_corpus} is not UTF-8 (invalid byte 0xe2 at line {line}, byte offset "
                   f"{offset:,}): pass --corpus '{latin1_corpus}?encoding=cp1252' (or the file's encoding), or "
                   "convert the file to UTF-8.\n")


def test_encoding_option_reads_the_corpus_and_is_kept_for_resume(latin1_corpus, tmp_path):
    from trainer.corpus import open_corpus

    spec = f"{latin1_corpus}?encoding=latin-1"
    corpus = open_corpus(spec)
    assert any("ch\u00e2t" in d for d in corpus.documents())
    out = tmp_path / "run"
    first = _train(spec, out, steps=2, overrides=(*OVERRIDES, "train.stop_after=1"))
    assert first.steps == 1 and json.loads((out / "run.json").read_text())["corpus"] == spec
    assert json.loads((out / "run.json").read_text())["corpus_digest"] == corpus.digest
    assert _train(spec, out, resume=True, steps=2).resumed_from == 1
    with pytest.raises(TrainerError, match=re.escape("is not UTF-8 (invalid byte 0xe2")):
        _train(latin1_corpus, out, resume=True, steps=2)  # the encoding is part of what the run was trained on
