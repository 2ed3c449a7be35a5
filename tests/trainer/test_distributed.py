"""Two gloo processes under torchrun on the CPU: replicas (student and EMA teacher) stay identical, rank 0 writes
the checkpoint, and the run equals a single process with the same global batch split into 2 accumulation steps."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

import trainer

from .conftest import SMALL, read_jsonl

DDP_SET = (*SMALL, "train.log_every=1", "train.ckpt_every=2", "model.hidden_dropout=0.1")


def test_two_gloo_processes_match_one_process_with_accumulation(corpus_file: Path, tmp_path: Path):
    out_ddp = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "trainer",
           "--objective", "hybrid", "--preset", "tiny", "--corpus", str(corpus_file), "--out", str(out_ddp),
           "--steps", "4", "--device", "cpu", "--format", "json", "--quiet"]
    for item in DDP_SET:
        cmd += ["--set", item]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])["summary"]
    assert summary["world_size"] == 2

    state = json.loads((out_ddp / "checkpoints" / "step-0000004" / "trainer_state.json").read_text())
    assert state["world_size"] == 2 and state["replicas_identical"] is True
    assert json.loads((out_ddp / "run.json").read_text())["latest"] == "checkpoints/step-0000004"
    assert len(read_jsonl(out_ddp / "logs" / "train.jsonl")) == 4  # rank 0 alone writes the logs

    single = trainer.run("hybrid", "tiny", corpus_file, tmp_path / "single", steps=4, device="cpu",
                         overrides=[*DDP_SET, "train.grad_accum=2"])
    for a, b in zip(read_jsonl(out_ddp / "logs" / "train.jsonl"), read_jsonl(single.out_dir / "logs" / "train.jsonl"),
                    strict=True):
        for key in ("loss_mlm", "loss_jepa", "grad_norm", "tokens_seen"):
            assert abs(a[key] - b[key]) <= 1e-4 * max(1.0, abs(b[key])), (a["step"], key, a[key], b[key])
    for name in ("model.safetensors", "trainer_state.safetensors"):
        ddp = load_file(out_ddp / "checkpoints" / "step-0000004" / name)
        one = load_file(single.final_checkpoint / name)
        assert ddp.keys() == one.keys()
        for k in ddp:
            if ddp[k].is_floating_point():
                torch.testing.assert_close(ddp[k], one[k], rtol=1e-4, atol=1e-5, msg=k)
