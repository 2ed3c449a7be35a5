"""End-to-end runs on the CPU: both losses go down and everything is logged, an interrupted run resumes on the same
loss curve, divergence and a full disk stop cleanly with the last good checkpoint, bad arguments, directories,
corpora and devices are refused in one line, and the device is resolved as embedgeom resolves it."""

from __future__ import annotations

import errno
import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import trainer
import trainer.checkpoint as ckpt_mod
import trainer.model as model_mod
from trainer import CheckpointWriteError, TrainerError, TrainingDiverged

from .conftest import SMALL, read_jsonl

EXACT = (*SMALL, "model.hidden_dropout=0.1", "model.attention_dropout=0.1", "train.log_every=1",
         "train.ckpt_every=4", "train.eval_every=4")


class Interrupted(Exception):
    pass


@pytest.fixture(scope="module")
def reference_run(corpus_file: Path, tmp_path_factory: pytest.TempPathFactory):
    """An uninterrupted 8-step hybrid run (dropout on), the reference for resume and checkpoint tests."""
    out = tmp_path_factory.mktemp("reference") / "run"
    summary = trainer.run("hybrid", "tiny", corpus_file, out, steps=8, overrides=EXACT, device="cpu")
    return summary


def test_mlm_loss_goes_down(corpus_file, tmp_path):
    rows = []
    s = trainer.run("mlm", "tiny", corpus_file, tmp_path / "run", steps=40, device="cpu", progress=rows.append,
                    overrides=[*SMALL, "optim.lr=3e-3", "train.log_every=5", "train.eval_every=40"])
    assert [r["step"] for r in rows] == list(range(5, 41, 5))
    assert rows[-1]["loss_mlm"] < rows[0]["loss_mlm"] - 1.0
    evals = read_jsonl(tmp_path / "run" / "logs" / "eval.jsonl")
    assert [e["step"] for e in evals] == [0, 40]
    assert evals[-1]["heldout_mlm_loss"] < evals[0]["heldout_mlm_loss"] - 1.0
    assert {"geometry_effective_rank", "geometry_uniformity"} <= set(evals[0])
    assert s.steps == 40 and s.tokens_seen == rows[-1]["tokens_seen"] > 0 and s.tokens_per_s > 0
    assert s.final_losses["heldout_mlm_loss"] == pytest.approx(evals[-1]["heldout_mlm_loss"])
    assert 0.13 < rows[-1]["mask_rate"] < 0.17


def test_hybrid_both_losses_go_down_and_everything_is_logged(corpus_file, tmp_path):
    rows = []
    trainer.run("hybrid", "tiny", corpus_file, tmp_path / "run", steps=40, device="cpu", progress=rows.append,
                overrides=[*SMALL, "optim.lr=3e-3", "train.log_every=5"])
    first, last = rows[0], rows[-1]
    assert last["loss_mlm"] < first["loss_mlm"] - 1.0
    assert last["loss_jepa"] < first["loss_jepa"]
    for r in rows:
        assert r["w_mlm"] > 0 and r["w_jepa"] > 0 and 0 < r["balance"] < 1 and 0 < r["mlm_share"] < 1
        assert 0.996 <= r["ema_momentum"] <= 1.0 and r["target_var"] > 0.1 and r["pred_var"] > 0.0
        assert r["grad_norm"] > 0 and r["lr"] > 0 and r["tokens_per_s"] > 0
    assert [r["ema_momentum"] for r in rows] == sorted(r["ema_momentum"] for r in rows)
    header = (tmp_path / "run" / "logs" / "train.csv").read_text().splitlines()[0].split(",")
    assert {"loss_mlm", "loss_jepa", "w_mlm", "w_jepa", "balance", "mlm_share", "ema_momentum", "target_var",
            "pred_var", "grad_norm", "lr", "tokens_per_s"} <= set(header)
    assert len(read_jsonl(tmp_path / "run" / "logs" / "train.jsonl")) == 8


def test_resume_after_interruption_continues_the_same_loss_curve(corpus_file, tmp_path, reference_run):
    out = tmp_path / "run"

    def stop_at_6(row):
        if row["step"] == 6:
            raise Interrupted

    with pytest.raises(Interrupted):
        trainer.run("hybrid", "tiny", corpus_file, out, steps=8, overrides=EXACT, device="cpu", progress=stop_at_6)
    assert json.loads((out / "run.json").read_text())["latest"] == "checkpoints/step-0000004"
    resumed = trainer.run("hybrid", "tiny", corpus_file, out, steps=8, overrides=EXACT, device="cpu", resume=True)
    assert resumed.resumed_from == 4
    ref = read_jsonl(reference_run.out_dir / "logs" / "train.jsonl")
    got = read_jsonl(out / "logs" / "train.jsonl")
    assert [r["step"] for r in got] == list(range(1, 9))  # steps 5-6 of the killed run were cut and redone
    for a, b in zip(ref, got, strict=True):
        for key in ("loss", "loss_mlm", "loss_jepa", "w_mlm", "w_jepa", "grad_norm", "target_var", "tokens_seen"):
            assert a[key] == pytest.approx(b[key], rel=1e-6, abs=1e-7), (a["step"], key)
    final_ref = load_file(reference_run.final_checkpoint / "model.safetensors")
    final_got = load_file(resumed.final_checkpoint / "model.safetensors")
    for k in final_ref:
        torch.testing.assert_close(final_got[k], final_ref[k], rtol=1e-6, atol=1e-7)
    teacher_ref = load_file(reference_run.final_checkpoint / "trainer_state.safetensors")
    teacher_got = load_file(resumed.final_checkpoint / "trainer_state.safetensors")
    for k in teacher_ref:
        if k.startswith(("teacher.", "balance.", "predictor.", "optim.")):
            torch.testing.assert_close(teacher_got[k], teacher_ref[k], rtol=1e-6, atol=1e-7)


def test_resume_with_a_different_config_lists_the_fields(corpus_file, reference_run):
    with pytest.raises(TrainerError) as err:
        trainer.run("hybrid", "tiny", corpus_file, reference_run.out_dir, steps=8, resume=True, device="cpu",
                    overrides=[*EXACT, "optim.lr=0.05", "objective.balance=sigmoid", "train.keep_last=1"])
    msg = str(err.value)
    assert "optim.lr: 0.001 -> 0.05" in msg and "objective.balance: 'uncertainty' -> 'sigmoid'" in msg
    assert "keep_last" not in msg and "\n" not in msg
    with pytest.raises(TrainerError, match=re.escape("objective.name: 'hybrid' -> 'mlm'")):
        trainer.run("mlm", "tiny", corpus_file, reference_run.out_dir, steps=8, resume=True, overrides=EXACT,
                    device="cpu")


def test_resuming_a_finished_run_returns_its_summary(corpus_file, reference_run):
    s = trainer.run("hybrid", "tiny", corpus_file, reference_run.out_dir, steps=8, resume=True, overrides=EXACT,
                    device="cpu")
    assert s.resumed_from == 8 and s.final_checkpoint == reference_run.final_checkpoint


def test_nan_loss_stops_with_step_checkpoint_and_losses(corpus_file, tmp_path, monkeypatch):
    real = model_mod.mlm_loss
    calls = {"n": 0}

    def poisoned(logits, labels):
        calls["n"] += 1
        loss = real(logits, labels)
        return loss * float("nan") if calls["n"] >= 6 else loss  # training step 6 (1-based)

    monkeypatch.setattr(model_mod, "mlm_loss", poisoned)
    out = tmp_path / "run"
    with pytest.raises(TrainingDiverged) as err:
        trainer.run("mlm", "tiny", corpus_file, out, steps=12, device="cpu",
                    overrides=[*SMALL, "train.log_every=3", "train.ckpt_every=4"])
    e = err.value
    assert e.step == 6 and e.last_checkpoint == out / "checkpoints" / "step-0000004"
    assert "step 6" in str(e) and "step-0000004" in str(e) and "loss_mlm=nan" in str(e)
    assert "loss_mlm" in e.losses and e.losses["loss_mlm"] != e.losses["loss_mlm"]  # the NaN itself
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step-0000004"]


def test_absurd_learning_rate_diverges_cleanly(corpus_file, tmp_path):
    with pytest.raises(TrainingDiverged, match=re.escape("Lower optim.lr (now 1e+30)")):
        trainer.run("hybrid", "tiny", corpus_file, tmp_path / "run", steps=6, device="cpu",
                    overrides=[*SMALL, "optim.lr=1e30", "train.log_every=2"])


def test_out_of_disk_while_checkpointing_keeps_the_previous_checkpoint(corpus_file, tmp_path, monkeypatch):
    from transformers import AutoModel

    real = ckpt_mod.save_tensors
    calls = {"n": 0}

    def flaky(tensors, path, metadata=None):
        calls["n"] += 1
        if calls["n"] >= 3:  # checkpoint 1 writes 2 files; the 2nd checkpoint's first file fails
            raise OSError(errno.ENOSPC, "No space left on device")
        real(tensors, path, metadata)

    monkeypatch.setattr(ckpt_mod, "save_tensors", flaky)
    out = tmp_path / "run"
    with pytest.raises(CheckpointWriteError) as err:
        trainer.run("mlm", "tiny", corpus_file, out, steps=8, device="cpu", overrides=[*SMALL, "train.ckpt_every=4"])
    assert "the disk is full" in str(err.value) and "step-0000004 is intact" in str(err.value)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-0000004"]  # no temp dir left
    assert json.loads((out / "run.json").read_text())["latest"] == "checkpoints/step-0000004"
    _, info = AutoModel.from_pretrained(out / "checkpoints" / "step-0000004", output_loading_info=True)
    assert not info["missing_keys"]


def test_unwritable_out_dir(corpus_file, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(TrainerError, match="out: expected a writable directory"):
        trainer.run("mlm", "tiny", corpus_file, blocker / "run", steps=2, device="cpu", overrides=SMALL)
    with pytest.raises(TrainerError, match=r"out: expected a directory, got .*which is a file"):
        trainer.run("mlm", "tiny", corpus_file, blocker, steps=2, device="cpu", overrides=SMALL)


def test_empty_corpus_says_how_many_tokens_it_needs(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(TrainerError, match=r"at least 240 training tokens .* got '.*empty\.txt' with 0 tokens"):
        trainer.run("mlm", "tiny", empty, tmp_path / "run", steps=2, device="cpu", overrides=SMALL)


def test_tiny_corpus_says_how_many_tokens_it_has(tmp_path):
    tiny = tmp_path / "tiny.txt"
    tiny.write_text("the cat sat on the mat\nthe dog sat on the log\na bird sang\n")
    with pytest.raises(TrainerError) as err:
        trainer.run("mlm", "tiny", tiny, tmp_path / "run", steps=2, device="cpu", overrides=SMALL)
    msg = str(err.value)
    assert "at least 240 training tokens (one batch of train.batch_size 8 rows x 30 tokens)" in msg
    assert "tokens in 3 documents after tokenisation" in msg and "lower train.batch_size" in msg


def test_existing_run_needs_resume_and_resume_needs_a_run(corpus_file, tmp_path, reference_run):
    with pytest.raises(TrainerError, match=r"already holds a run .*Pass --resume"):
        trainer.run("hybrid", "tiny", corpus_file, reference_run.out_dir, steps=8, overrides=EXACT, device="cpu")
    with pytest.raises(TrainerError, match="resume: expected an --out holding a run"):
        trainer.run("hybrid", "tiny", corpus_file, tmp_path / "nothing", steps=8, resume=True, device="cpu")


def test_keep_last_k(corpus_file, tmp_path):
    out = tmp_path / "run"
    trainer.run("mlm", "tiny", corpus_file, out, steps=8, device="cpu",
                overrides=[*SMALL, "train.ckpt_every=2", "train.keep_last=2"])
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-0000006", "step-0000008"]
    run = json.loads((out / "run.json").read_text())
    assert run["checkpoints"] == ["checkpoints/step-0000006", "checkpoints/step-0000008"]


def test_bf16_autocast_path_runs_on_cpu(corpus_file, tmp_path):
    s = trainer.run("hybrid", "tiny", corpus_file, tmp_path / "run", steps=3, device="cpu",
                    overrides=[*SMALL, "train.precision=bf16"])
    assert all(v == v for v in s.final_losses.values())  # finite, not NaN
    state = load_file(s.final_checkpoint / "model.safetensors")
    assert all(t.dtype == torch.float32 for t in state.values())  # bf16 only in autocast, master weights fp32



def test_geometry_snapshot_is_computed_in_float32_under_bf16_training(corpus_file, tmp_path, monkeypatch):
    import trainer.engine as engine_mod

    seen: list[tuple[bool, bool]] = []  # (inside Engine.embed, autocast enabled) per student forward
    inside = [False]
    real_encode, real_embed = model_mod.Student.encode, engine_mod.Engine.embed

    def encode(self, *args, **kwargs):
        seen.append((inside[0], torch.is_autocast_enabled("cpu")))
        return real_encode(self, *args, **kwargs)

    def embed(self, batch):
        inside[0] = True
        try:
            return real_embed(self, batch)
        finally:
            inside[0] = False

    monkeypatch.setattr(model_mod.Student, "encode", encode)
    monkeypatch.setattr(engine_mod.Engine, "embed", embed)
    trainer.run("mlm", "tiny", corpus_file, tmp_path / "run", steps=2, device="cpu",
                overrides=[*SMALL, "train.precision=bf16", "train.eval_every=2"])
    in_embed = [amp for where, amp in seen if where]
    elsewhere = [amp for where, amp in seen if not where]
    assert in_embed and not any(in_embed)  # the snapshot ran, in float32
    assert elsewhere and all(elsewhere)  # training and held-out loss stayed in bf16 autocast

def test_sample_corpus_and_the_library_never_prints(tmp_path, capsys):
    s = trainer.run("mlm", "tiny", "sample:polarity", tmp_path / "run", steps=2, device="cpu", overrides=SMALL)
    assert s.final_checkpoint.is_dir()
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_bad_arguments(corpus_file, tmp_path):
    with pytest.raises(TrainerError, match=re.escape("device: expected 'auto', 'cpu', 'cuda' or 'cuda:N', got 'tpu'.")):
        trainer.run("mlm", "tiny", corpus_file, tmp_path / "a", device="tpu")
    with pytest.raises(TrainerError, match="progress: expected a callable"):
        trainer.run("mlm", "tiny", corpus_file, tmp_path / "a", progress=3)
    if not torch.cuda.is_available():
        with pytest.raises(TrainerError, match="device: expected a CUDA device"):
            trainer.run("mlm", "tiny", corpus_file, tmp_path / "a", device="cuda")


@pytest.mark.parametrize("cuda", [False, True])
@pytest.mark.parametrize("mps", [False, True])
@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:0", "cuda:1", "tpu", "cuda:x", "", "gpu"])
def test_resolve_device_matches_embedgeom(device, cuda, mps, monkeypatch):
    """The trainer's resolve_device gives the device, or the error message, of its reference,
    embedgeom.devices.resolve_device, for auto/cpu/cuda/cuda:N and malformed names, with and without a GPU/MPS."""
    from embedgeom.devices import resolve_device as reference
    from trainer.loop import training_device as resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
    try:
        expected = reference(device)
    except ValueError as err:
        with pytest.raises(TrainerError) as got:
            resolve_device(device)
        assert str(got.value) == str(err)
    else:
        assert resolve_device(device) == expected


def test_resolve_device_refuses_what_the_trainer_cannot_train_on(monkeypatch):
    from trainer.loop import training_device as resolve_device

    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    expected = "device: expected 'auto', 'cpu', 'cuda' or 'cuda:N', got 'meta'."
    with pytest.raises(TrainerError, match=re.escape(expected)):
        resolve_device("meta")
    with pytest.raises(TrainerError, match="device: expected an MPS device, got none available"):
        resolve_device("mps")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    with pytest.raises(TrainerError, match="expected 'auto', 'cpu', 'cuda' or 'cuda:N', got 3"):
        resolve_device(3)


def test_any_hf_tokenizer_directory(corpus_file, tmp_path):
    from transformers import AutoTokenizer

    from embedgeom.samples import minilm_path

    src = minilm_path()  # a real BERT WordPiece tokenizer (uncased, 30522 pieces) from the demo extra
    s = trainer.run("mlm", "tiny", corpus_file, tmp_path / "run", steps=2, device="cpu",
                    overrides=[*SMALL, f"data.tokenizer={src}"])
    saved = AutoTokenizer.from_pretrained(s.final_checkpoint)
    original = AutoTokenizer.from_pretrained(src)
    assert len(saved) == len(original) == 30522
    text = "the quick child paints the old window ."
    assert saved(text)["input_ids"] == original(text)["input_ids"]
    assert saved.model_max_length == 32  # capped at the trained positions
    assert json.loads((s.final_checkpoint / "config.json").read_text())["vocab_size"] == 30522
