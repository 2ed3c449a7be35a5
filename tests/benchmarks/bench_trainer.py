"""Benchmark: trainer step throughput.

    python tests/benchmarks/bench_trainer.py --cpu            # tiny preset, both objectives, end to end on sample:wiki
    python tests/benchmarks/bench_trainer.py --cpu --compile  # adds torch.compile'd steps (slow to compile on a CPU)
    python tests/benchmarks/bench_trainer.py --gpu            # BERT-base, batch 256 x 128, bf16, one process:
                                                              # HF BertForMaskedLM vs our mlm vs our hybrid
    python tests/benchmarks/bench_trainer.py --gpu-smoke      # the --gpu code path on the CPU at toy size
                                                              # (prints; with --out DIR writes trainer_gpu there)
    python tests/benchmarks/bench_trainer.py --cpu-vs-hf      # the same head-to-head on the CPU: paper preset
                                                              # (6 x 512, vocab 30522), batch 8 x 128, fp32, eager
    python tests/benchmarks/bench_trainer.py --gpu --sizing-preset paper --budget-s 140
        # also times our engine at the paper preset's model (same batch, eager), the rate a study run is sized from;
        # variants that would not fit in 140 s are skipped and listed (compiled ones need about a minute each)

Writes reports/benchmarks/trainer_cpu.{json,md}, trainer_vs_hf_cpu.{json,md} or trainer_gpu.{json,md} (``--out DIR``:
there instead). The head-to-head report is rewritten after every variant, so a run stopped early keeps what it
measured (``"complete": false``).

GPU protocol (same process, same config, random token ids, 15% of the tokens selected, bf16 autocast, SDPA,
fused AdamW): the baseline is BertForMaskedLM trained the usual way (labels -100 outside the selection, logits for
every token); ours is ``trainer.engine.Engine`` — the exact step ``trainer.run`` executes (masking on device,
head on the masked slots only, EMA teacher and predictor for the hybrid). Tokens/s count all B x L tokens.
MFU = model FLOPs / step time / the measured bf16 matmul rate (8192^3), with model FLOPs = 3 x (encoder forward)
+ 3 x (MLM head on the 15% selected tokens) [+ teacher forward + 3 x predictor for the hybrid]; the baseline's
head over the unselected tokens is not counted as useful work.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.benchmarks._harness import machine, sync, write_report

# -- CPU: the tiny preset end to end -----------------------------------------------------------------------------


def _cpu_run(objective: str, steps: int, threads: int, compile: bool, workdir: Path) -> dict[str, Any]:
    import trainer

    torch.set_num_threads(threads)
    rows: list[dict] = []
    overrides = ["train.log_every=10", "train.eval_every=0", f"train.ckpt_every={steps}"]
    if compile:
        overrides.append("train.compile=true")
    out = workdir / f"{objective}-{threads}t{'-compiled' if compile else ''}"
    t0 = time.perf_counter()
    summary = trainer.run(objective, "tiny", "sample:wiki", out, steps=steps, device="cpu", overrides=overrides,
                          progress=rows.append)
    wall = time.perf_counter() - t0
    # steady state: skip the first logging interval (warm-up, compilation); rows carry cumulative elapsed_s
    first, last = rows[0], rows[-1]
    # the last interval also holds the final evaluation and checkpoint: time steps from interval throughputs
    per_interval = [(b["step"] - a["step"]) / (b["elapsed_s"] - a["elapsed_s"]) for a, b in pairwise(rows)][:-1]
    tokens_per_step = (last["tokens_seen"] - first["tokens_seen"]) / (last["step"] - first["step"])
    sps = statistics.median(per_interval) if per_interval else float("nan")
    return {"objective": objective, "threads": threads, "compiled": compile, "steps": steps,
            "steps_per_s_median": sps, "steps_per_s_best": max(per_interval) if per_interval else float("nan"),
            "tokens_per_s_median": sps * tokens_per_step, "real_tokens_per_step": tokens_per_step,
            "wall_s_including_setup": wall, "first_logged_loss_mlm": first["loss_mlm"],
            "final_loss_mlm": last["loss_mlm"], "final_heldout_mlm_loss": summary.final_losses.get("heldout_mlm_loss")}


def cpu_part(steps: int, threads: list[int], compile: bool, out_dir: Path | None = None) -> None:
    from trainer.config import preset_config

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for t in threads:
            for objective in ("mlm", "hybrid"):
                results.append(_cpu_run(objective, steps, t, False, Path(tmp)))
        if compile:
            for objective in ("mlm", "hybrid"):
                results.append(_cpu_run(objective, steps, threads[0], True, Path(tmp)))
    tiny = preset_config("tiny")
    m, d = tiny.model, tiny.data
    setup = (f"tiny preset: {m.num_layers} layers, d={m.hidden_size}, {m.num_heads} heads, FFN {m.intermediate_size}, "
             f"{d.seq_len} tokens, batch {tiny.train.batch_size}, WordPiece vocab {d.vocab_size} trained on "
             f"sample:wiki, fp32, {steps} steps per run")
    path = write_report("trainer_cpu", {"setup": setup, "results": results}, cpu_markdown(setup, results), out_dir)
    print(path.read_text())


def cpu_markdown(setup: str, results: list[dict[str, Any]]) -> str:
    lines = ["# Trainer benchmark (CPU)", "", setup + ".", "",
             "Steps/s: median over 10-step logging intervals after the first (warm-up/compilation) interval; the "
             "final interval, which also holds the final evaluation and checkpoint, is left out. Tokens are real "
             "(non-padding) tokens.", "",
             "| objective | torch threads | compiled | steps/s (median) | steps/s (best) | tokens/s | wall incl. "
             "setup (s) | MLM loss first -> last log | held-out MLM loss |", "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['objective']} | {r['threads']} | {'yes' if r['compiled'] else 'no'} | "
                     f"{r['steps_per_s_median']:.2f} | {r['steps_per_s_best']:.2f} | {r['tokens_per_s_median']:,.0f} | "
                     f"{r['wall_s_including_setup']:.1f} | {r['first_logged_loss_mlm']:.2f} -> "
                     f"{r['final_loss_mlm']:.2f} | {r['final_heldout_mlm_loss']:.2f} |")
    lines += ["", "The first run of each corpus also trains the tokenizer and packs the corpus (cached afterwards), "
              "which is in its wall time. A best rate far above the median means other work competed for the cores "
              "during that run: with two OpenMP threads every parallel region then waits for the descheduled thread "
              "(see the CPU note in trainer/README.md); one thread is immune to it.", ""]
    return "\n".join(lines)


# -- GPU: BERT-base, batch 256 x 128 -------------------------------------------------------------------------------


def matmul_tflops(device: torch.device, n: int = 8192, repeat: int = 20, dtype: torch.dtype = torch.bfloat16) -> float:
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    t0 = time.perf_counter()
    for _ in range(repeat):
        a @ b
    sync(device)
    return 2 * n**3 * repeat / (time.perf_counter() - t0) / 1e12


def encoder_flops_per_token(layers: int, hidden: int, inter: int, seq: int) -> float:
    """Forward matmul FLOPs per token: QKV + output projection + FFN + attention scores and values."""
    return layers * (2 * (4 * hidden * hidden + 2 * hidden * inter) + 2 * 2 * seq * hidden)


def head_flops_per_token(hidden: int, vocab: int) -> float:
    return 2 * (hidden * hidden + hidden * vocab)


def _time_steps(step, device: torch.device, warmup: int, steps: int) -> tuple[float, float]:
    for i in range(warmup):
        step(i)
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    for i in range(warmup, warmup + steps):
        step(i)
    sync(device)
    elapsed = (time.perf_counter() - t0) / steps
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    return elapsed, peak


def _hf_variant(cfg: Any, device: torch.device, batch: int, seq: int, compiled: bool, warmup: int, steps: int,
                bf16: bool) -> tuple[float, float]:
    from transformers import BertForMaskedLM

    torch.manual_seed(0)
    model = BertForMaskedLM(cfg).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    fwd = torch.compile(model) if compiled else model
    gen = torch.Generator(device=device).manual_seed(0)
    vocab = cfg.vocab_size

    def step(i: int) -> None:
        ids = torch.randint(5, vocab, (batch, seq), device=device, generator=gen)
        sel = torch.rand(batch, seq, device=device, generator=gen) < 0.15
        labels = torch.where(sel, ids, torch.full_like(ids, -100))
        inp = torch.where(sel, torch.full_like(ids, 4), ids)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = fwd(input_ids=inp, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return _time_steps(step, device, warmup, steps)


def _our_variant(objective: str, preset: str, overrides: list[str], device: torch.device, batch: int, seq: int,
                 vocab: int, compiled: bool, warmup: int, steps: int) -> tuple[float, float, Any]:
    from trainer.config import resolve_config
    from trainer.distributed import DistInfo
    from trainer.loop import engine_from_config
    from trainer.tokenizer import SpecialIds

    config = resolve_config(objective, preset, [*overrides, f"train.batch_size={batch}", f"data.seq_len={seq}",
                                                f"train.compile={'true' if compiled else 'false'}"],
                            steps=warmup + steps)
    special = SpecialIds(pad=0, cls=2, sep=3, mask=4, all=(0, 1, 2, 3, 4), vocab_size=vocab)
    engine = engine_from_config(config, special, device=device, dist=DistInfo())
    rng = np.random.default_rng(0)
    segments = np.ones((batch, seq), dtype=np.uint8)  # one text per row, no padding: no attention mask

    def step(i: int) -> None:
        tokens = rng.integers(5, vocab, (batch, seq))
        tokens[:, 0], tokens[:, -1] = 2, 3
        engine.train_step(i, [(tokens, segments)])

    elapsed, peak = _time_steps(step, device, warmup, steps)
    return elapsed, peak, engine.pop_stats()


@dataclass(frozen=True)
class HeadToHead:
    """One HF-vs-ours setting: what runs where, for how long, and where its report goes (None = print only)."""

    description: str
    device: str
    preset: str
    batch: int
    seq: int
    vocab: int
    warmup: int
    steps: int
    bf16: bool
    compiled: tuple[bool, ...]
    peak_n: int
    peak_repeat: int
    report: str | None
    #: (hidden, layers, intermediate, heads) overriding the preset's; None = the preset's own.
    dims: tuple[int, int, int, int] | None = None
    threads: int | None = None


SETTINGS = {
    "gpu": HeadToHead("BERT-base (12 x 768, 12 heads, vocab 30522)", "cuda", "base", 256, 128, 30522, 10, 30,
                      True, (False, True), 8192, 20, "trainer_gpu"),
    "cpu": HeadToHead("paper preset (6 x 512, 8 heads, vocab 30522) on the CPU, eager", "cpu", "paper", 8, 128,
                      30522, 2, 16, False, (False,), 2048, 5, "trainer_vs_hf_cpu"),
    "smoke": HeadToHead("toy smoke config on the CPU", "cpu", "tiny", 8, 32, 512, 1, 2, False, (False,), 512, 2,
                        None, dims=(64, 2, 128, 2), threads=1),
}


def model_flops(preset: str, dims: tuple[int, int, int, int] | None, seq: int, vocab: int) -> dict[str, float]:
    """Model FLOPs per token of a training step (see the module docstring) for ``preset``'s encoder (or ``dims`` =
    (hidden, layers, intermediate, heads)) and its hybrid predictor, plus the pieces the ratios need."""
    from trainer.config import preset_config

    m = preset_config(preset).model
    hidden, layers, inter, _heads = dims or (m.hidden_size, m.num_layers, m.intermediate_size, m.num_heads)
    enc = encoder_flops_per_token(layers, hidden, inter, seq)
    full_head = head_flops_per_token(hidden, vocab)
    head = full_head * 0.15
    pred_cfg = preset_config(preset, "hybrid").predictor
    pw = pred_cfg.hidden_size or hidden // 2
    pred = encoder_flops_per_token(pred_cfg.layers, pw, 4 * pw, seq) + 2 * 2 * hidden * pw
    return {"mlm": 3 * (enc + head), "hybrid": 3 * (enc + head) + enc + 3 * pred, "encoder": enc, "head": head,
            "full_head": full_head}


#: Seconds a variant needs at least before it is started under ``--budget-s`` (a compiled one compiles first).
NEEDS_S = {"eager": 10.0, "compiled": 60.0}


def head_to_head(h: HeadToHead, *, out_dir: Path | None = None, budget_s: float | None = None,
                 sizing_preset: str | None = None) -> dict[str, Any]:
    """HF BertForMaskedLM vs our engine (mlm and hybrid), one process, the setting ``h``; with ``sizing_preset``
    also our engine (eager) at that preset's own model, same batch and precision — the throughput a training run
    at that preset is sized from. Variants that would not fit in ``budget_s`` are skipped and listed. The report
    (``h.report`` in ``out_dir``, default reports/benchmarks; smoke: ``out_dir`` only) is rewritten after every
    variant. Returns the payload."""
    from trainer.config import preset_config
    from trainer.model import bert_config

    t_start = time.perf_counter()
    if h.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--gpu needs a CUDA device (use --gpu-smoke to check the code path on the CPU)")
    device = torch.device(h.device)
    if h.threads:
        torch.set_num_threads(h.threads)
    m = preset_config(h.preset).model
    hidden, layers, inter, heads = h.dims or (m.hidden_size, m.num_layers, m.intermediate_size, m.num_heads)
    precision = "bf16" if h.bf16 else "fp32"
    overrides = [f"train.precision={precision}", "model.hidden_dropout=0.1", "model.attention_dropout=0.1"]
    if h.dims:
        overrides += [f"model.num_layers={layers}", f"model.hidden_size={hidden}", f"model.intermediate_size={inter}"]
    cfg = bert_config(vocab_size=h.vocab, hidden_size=hidden, num_layers=layers, num_heads=heads,
                      intermediate_size=inter, max_position_embeddings=h.seq, hidden_dropout=0.1,
                      attention_dropout=0.1, hidden_act="gelu", layer_norm_eps=1e-12, initializer_range=0.02,
                      pad_token_id=0)
    peak_dtype = torch.bfloat16 if h.bf16 else torch.float32
    peak = matmul_tflops(device, n=h.peak_n, repeat=h.peak_repeat, dtype=peak_dtype)
    fl = model_flops(h.preset, h.dims, h.seq, h.vocab)
    tokens = h.batch * h.seq
    sizing_vocab = preset_config(sizing_preset).data.vocab_size if sizing_preset else 0
    sizing_fl = model_flops(sizing_preset, None, h.seq, sizing_vocab) if sizing_preset else {}
    results: list[dict[str, Any]] = []
    skipped: list[str] = []
    setup = (f"{h.description}, {torch.get_num_threads() if device.type == 'cpu' else 1} "
             f"{'threads' if device.type == 'cpu' else 'GPU'}, batch {h.batch} x {h.seq} tokens, "
             f"{'bf16 autocast' if h.bf16 else 'fp32'}, SDPA, {'fused AdamW' if device.type == 'cuda' else 'AdamW'}, "
             f"dropout 0.1, random token ids, 15% selected, {h.steps} timed steps after {h.warmup} warm-up steps")
    payload: dict[str, Any] = {"setup": setup, f"{precision}_matmul_tflops": peak, "model_flops_per_token": fl,
                               "results": results, "skipped": skipped, "complete": False}
    if budget_s is not None:
        payload["budget_s"] = budget_s

    # (row name, kind, compiled, preset for a sizing row or None)
    plan: list[tuple[str, str, bool, str | None]] = []
    for compiled in h.compiled:
        tag = "compiled" if compiled else "eager"
        plan += [(f"hf_BertForMaskedLM_{tag}", "hf", compiled, None), (f"ours_mlm_{tag}", "mlm", compiled, None),
                 (f"ours_hybrid_{tag}", "hybrid", compiled, None)]
        if not compiled and sizing_preset:
            plan += [(f"ours_{o}_eager@{sizing_preset}", o, False, sizing_preset) for o in ("mlm", "hybrid")]

    def flush(final: bool = False) -> None:
        payload["complete"] = final
        payload.update(summarise(results, fl))
        if sizing_preset:
            rates = {r["objective"]: r["tokens_per_s"] for r in results if r.get("preset") == sizing_preset}
            payload["sizing"] = {"preset": sizing_preset, "batch": h.batch, "seq": h.seq, "precision": precision,
                                 "compiled": False, "tokens_per_s": rates, "model_flops_per_token": sizing_fl}
        if h.report is not None or out_dir is not None:
            write_report(h.report or "trainer_gpu", payload, gpu_markdown(h, payload), out_dir)

    for name, kind, compiled, preset in plan:
        if budget_s is not None:
            left = budget_s - (time.perf_counter() - t_start)
            need = NEEDS_S["compiled" if compiled else "eager"]
            if left < need:
                skipped.append(f"{name}: {left:.0f} s of the {budget_s:.0f} s budget left, needs about {need:.0f} s")
                continue
        if kind == "hf":
            e, mem = _hf_variant(cfg, device, h.batch, h.seq, compiled, h.warmup, h.steps, h.bf16)
            extra: dict[str, Any] = {}
        elif preset is None:
            e, mem, stats = _our_variant(kind, h.preset, overrides, device, h.batch, h.seq, h.vocab, compiled,
                                         h.warmup, h.steps)
            extra = {"loss_mlm": stats["loss_mlm"]}
        else:
            e, mem, stats = _our_variant(kind, preset, [f"train.precision={precision}"], device, h.batch, h.seq,
                                         sizing_vocab, False, h.warmup, h.steps)
            extra = {"loss_mlm": stats["loss_mlm"], "preset": preset}
        tps = tokens / e
        flops = (sizing_fl if preset else fl)["mlm" if kind == "hf" else kind]
        results.append({"variant": name, "objective": "mlm" if kind == "hf" else kind, "tokens_per_s": tps,
                        "step_ms": e * 1e3, "mfu": flops * tps / (peak * 1e12), "peak_memory_gib": mem, **extra})
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
        flush()
    flush(final=True)
    if h.report is None and out_dir is None:
        print(json.dumps(payload, indent=2, default=float))
    else:
        print(gpu_markdown(h, payload))
    return payload


def summarise(results: list[dict[str, Any]], fl: dict[str, float]) -> dict[str, Any]:
    """Ratios between the variants measured so far (the head-to-head rows, not the sizing rows)."""
    by = {r["variant"]: r["tokens_per_s"] for r in results if "preset" not in r}
    ratios: dict[str, float] = {}
    mlm = [v for k, v in by.items() if k.startswith("ours_mlm")]
    hybrid = [v for k, v in by.items() if k.startswith("ours_hybrid")]
    if mlm and "hf_BertForMaskedLM_eager" in by:
        ratios["ours_mlm_best_over_hf_eager"] = max(mlm) / by["hf_BertForMaskedLM_eager"]
    if mlm and hybrid:
        ratios["ours_hybrid_best_over_ours_mlm_best"] = max(hybrid) / max(mlm)
    if mlm and "hf_BertForMaskedLM_compiled" in by:
        ratios["ours_mlm_best_over_hf_compiled"] = max(mlm) / by["hf_BertForMaskedLM_compiled"]
    # FLOP ratios: HF also runs the head on the 85% unselected tokens; the hybrid adds teacher + predictor
    bounds = {"ours_mlm_over_hf_flop_ratio": (fl["encoder"] + fl["full_head"]) / (fl["encoder"] + fl["head"]),
              "ours_hybrid_over_ours_mlm_flop_ratio": fl["mlm"] / fl["hybrid"]}
    return {"ratios": ratios, "flop_ratios": bounds}


def gpu_markdown(h: HeadToHead, payload: dict[str, Any]) -> str:
    precision = "bf16" if h.bf16 else "fp32"
    peak = payload[f"{precision}_matmul_tflops"]
    ratios, bounds = payload["ratios"], payload["flop_ratios"]
    lines = [f"# Trainer benchmark ({'GPU' if h.device == 'cuda' else 'CPU, head to head'})", "",
             *(["**Smoke run: the GPU code path on the CPU at toy sizes; these numbers measure nothing.**", ""]
               if h.report is None else []),
             payload["setup"] + ".", "",
             f"Measured {precision} matmul rate ({h.peak_n}^3): {peak:.2f} TFLOP/s. MFU counts model FLOPs (encoder "
             "fwd+bwd, MLM head on the selected 15% only, + teacher forward and predictor for the hybrid).", "",
             "| variant | tokens/s | step (ms) | MFU | peak memory (GiB) |", "|---|---|---|---|---|"]
    for r in payload["results"]:
        mem = r["peak_memory_gib"]
        lines.append(f"| {r['variant']} | {r['tokens_per_s']:,.0f} | {r['step_ms']:.1f} | {r['mfu']:.1%} | "
                     f"{'–' if math.isnan(mem) else f'{mem:.2f}'} |")
    lines += ["", *(f"- {k}: {v:.2f}x" for k, v in ratios.items()),
              f"- FLOP ratios (what purely compute-bound steps would give; HF's memory-bound full-vocabulary "
              f"softmax is not counted, so it can be beaten): ours mlm / HF "
              f"{bounds['ours_mlm_over_hf_flop_ratio']:.2f}x, ours hybrid / ours mlm "
              f"{bounds['ours_hybrid_over_ours_mlm_flop_ratio']:.2f}x",
              "- targets (set for the H100): ours mlm >= 2x HF eager; ours hybrid >= 0.75x ours mlm"]
    if "sizing" in payload:
        sz = payload["sizing"]
        lines.append(f"- rows `@{sz['preset']}`: our engine at the {sz['preset']} preset's own model (same batch, "
                     "eager), the throughput a study run at that preset is sized from")
    if payload["skipped"]:
        lines += ["", f"Skipped (time budget {payload.get('budget_s', 0):.0f} s):", "",
                  *(f"- {s}" for s in payload["skipped"])]
    if not payload["complete"]:
        lines += ["", "**Incomplete**: the run stopped before every variant was measured; the rows above were."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cpu", action="store_true")
    p.add_argument("--gpu", action="store_true")
    p.add_argument("--gpu-smoke", action="store_true")
    p.add_argument("--cpu-vs-hf", action="store_true", help="HF vs ours head to head on the CPU (paper preset)")
    p.add_argument("--compile", action="store_true", help="CPU: also time torch.compile'd steps")
    p.add_argument("--steps", type=int, default=100, help="CPU: steps per run")
    p.add_argument("--threads", default="1,2", help="CPU: torch intra-op thread counts to try")
    p.add_argument("--out", type=Path, default=None, help="report directory (default reports/benchmarks; with "
                   "--gpu-smoke, print only unless given)")
    p.add_argument("--budget-s", type=float, default=None, help="head to head: skip the variants that would not "
                   "fit in this many seconds from the start (listed in the report)")
    p.add_argument("--sizing-preset", default=None, help="head to head: also time our engine (eager) at this "
                   "preset's own model, same batch and precision (the rate a run at that preset is sized from)")
    args = p.parse_args(argv)
    if not (args.cpu or args.gpu or args.gpu_smoke or args.cpu_vs_hf):
        args.cpu = True
    print(json.dumps(machine()), file=sys.stderr)
    if args.cpu:
        cpu_part(args.steps, [int(t) for t in args.threads.split(",")], args.compile, args.out)
    for mode, wanted in (("gpu", args.gpu), ("smoke", args.gpu_smoke), ("cpu", args.cpu_vs_hf)):
        if wanted:
            head_to_head(SETTINGS[mode], out_dir=args.out, budget_s=args.budget_s, sizing_preset=args.sizing_preset)


if __name__ == "__main__":
    main()
