"""The trainer's one command line (``python -m trainer`` and ``embedgeom train``): every option parsed, the help
describes each of them, a run prints its result on stdout and its progress on stderr (text or JSON), bad input is
one line with exit code 2, other failures one line with exit code 1."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

import trainer
from trainer.cli import Progress, build_parser, main
from trainer.config import valid_keys

from .conftest import SMALL

SUMMARY = re.compile(r"trained (\d+) steps in \d+ s \(\d+ tokens/s\); final checkpoint: (.+)")


def _argv(corpus, out, *extra: str, steps: int = 2, overrides=(*SMALL, "train.log_every=1")) -> list[str]:
    argv = ["--objective", "mlm", "--corpus", str(corpus), "--out", str(out), "--steps", str(steps), "--device",
            "cpu", *extra]
    for item in overrides:
        argv += ["--set", item]
    return argv


def test_every_option_is_parsed():
    parser = build_parser()
    args = parser.parse_args(["--objective", "hybrid", "--corpus", "data.jsonl", "-o", "runs/x", "--preset", "base",
                              "--steps", "12", "--resume", "--set", "optim.lr=3e-4", "--set", "train.seed=1",
                              "--device", "cuda:1", "--format", "json", "-q"])
    assert vars(args) == {"objective": "hybrid", "corpus": "data.jsonl", "out": "runs/x", "preset": "base",
                          "steps": 12, "resume": True, "overrides": ["optim.lr=3e-4", "train.seed=1"],
                          "device": "cuda:1", "format": "json", "quiet": True, "verbose": False}
    defaults = parser.parse_args(["--objective", "mlm", "--corpus", "sample:wiki", "--out", "o"])
    assert vars(defaults) == {"objective": "mlm", "corpus": "sample:wiki", "out": "o", "preset": "tiny",
                              "steps": None, "resume": False, "overrides": [], "device": "auto", "format": "text",
                              "quiet": False, "verbose": False}
    long = parser.parse_args(["--objective", "mlm", "--corpus", "c", "--out", "o", "--no-resume", "--verbose",
                              "--quiet"])
    assert long.resume is False and long.verbose and long.quiet  # main() refuses the pair (below)


def test_help_describes_every_option_and_lists_the_set_keys(capsys):
    parser = build_parser(prog="embedgeom train")
    assert main(["--help"], prog="embedgeom train") == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: embedgeom train")
    for action in parser._actions:
        assert action.help, action.option_strings
        for flag in action.option_strings:
            assert flag in text
    assert all(key in text for key in valid_keys())
    assert "Exit codes" in text and "stdout" in text and "stderr" in text


def test_python_m_trainer_is_this_cli():
    import trainer.__main__ as entry

    assert entry.main is main
    proc = subprocess.run([sys.executable, "-m", "trainer", "--objective", "jepa", "--corpus", "c", "--out", "o"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == "" and proc.stderr.count("\n") == 1
    assert proc.stderr.startswith("error: argument --objective: invalid choice: 'jepa'")
    assert proc.stderr.endswith("(see 'python -m trainer --help').\n")


def test_run_prints_the_result_on_stdout_and_a_line_per_logged_step_on_stderr(corpus_file, tmp_path, capsys):
    assert main(_argv(corpus_file, tmp_path / "run")) == 0
    out, err = capsys.readouterr()
    (line,) = out.strip().splitlines()
    steps, checkpoint = SUMMARY.fullmatch(line).groups()
    assert steps == "2" and checkpoint == str(tmp_path / "run" / "checkpoints" / "step-0000002")
    lines = err.strip().splitlines()  # stderr is not a terminal here: lines, no bar
    assert [x.split()[:1] + x.split()[1:2] for x in lines] == [["step", "1/2"], ["step", "2/2"]]
    assert all(re.fullmatch(r"step \d/2 loss_mlm=\S+ lr=\S+", x) for x in lines)


def test_json_format_prints_a_json_line_per_logged_step_and_the_summary(corpus_file, tmp_path, capsys):
    assert main(_argv(corpus_file, tmp_path / "run", "--format", "json")) == 0
    out, err = capsys.readouterr()
    lines = [json.loads(x) for x in out.strip().splitlines()]
    assert [x["step"] for x in lines[:-1]] == [1, 2] and all("loss_mlm" in x for x in lines[:-1])
    assert lines[-1]["summary"]["steps"] == 2 and lines[-1]["summary"]["final_checkpoint"].endswith("step-0000002")
    assert err == ""  # the JSON lines are the progress


@pytest.mark.parametrize(("argv", "code", "start"), [
    (["--objective", "mlm", "--corpus", "c", "--out", "o", "--bogus"], 2, "error: unrecognized arguments: --bogus"),
    (["--corpus", "c", "--out", "o"], 2, "error: the following arguments are required: --objective"),
    (["--objective", "jepa", "--corpus", "c", "--out", "o"], 2, "error: argument --objective: invalid choice"),
    (["--objective", "mlm", "--corpus", "c", "--out", "o", "--preset", "huge"], 2,
     "error: argument --preset: invalid choice"),
    (["--objective", "mlm", "--corpus", "c", "--out", "o", "--steps", "x"], 2,
     "error: argument --steps: invalid int value"),
    (["--objective", "mlm", "--corpus", "c", "--out", "o", "--format", "xml"], 2,
     "error: argument --format: invalid choice"),
    (["--objective", "mlm", "--corpus", "c", "--out", "o", "-q", "-v"], 2,
     "error: --verbose, --quiet: expected at most one of them, got both."),
    (["--objective", "mlm", "--corpus", "c", "--out", "o", "--steps", "0"], 2, "error: steps: expected a positive"),
    (["--objective", "mlm", "--corpus", "c", "--out", "o", "--set", "optim.lr=fast"], 2,
     "error: optim.lr: expected a number"),
    (["--objective", "mlm", "--corpus", "c", "--out", "o", "--set", "model.nope=1"], 2,
     "error: override 'model.nope': unknown key."),
    (["--objective", "mlm", "--corpus", "c", "--out", "o", "--device", "tpu"], 2,
     "error: device: expected 'auto', 'cpu', 'cuda' or 'cuda:N', got 'tpu'."),
])
def test_bad_input_is_one_line_on_stderr_and_exit_code_2(argv, code, start, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # nothing may be written, but if it were, not into the checkout
    assert main(argv) == code
    out, err = capsys.readouterr()
    assert out == "" and err.startswith(start) and err.count("\n") == 1, err
    assert not (tmp_path / "o").exists()


def test_other_failures_are_one_line_exit_1_and_interrupts_130(monkeypatch, capsys):
    def boom(*args, **kwargs):
        raise RuntimeError("disk on fire\nsecond line")

    monkeypatch.setattr(trainer, "run", boom)
    argv = ["--objective", "mlm", "--corpus", "c", "--out", "o"]
    monkeypatch.delenv("EMBEDGEOM_DEBUG", raising=False)
    assert main(argv) == 1
    assert capsys.readouterr().err == "error: disk on fire (EMBEDGEOM_DEBUG=1 for the traceback)\n"
    monkeypatch.setenv("EMBEDGEOM_DEBUG", "1")
    with pytest.raises(RuntimeError, match="disk on fire"):
        main(argv)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "run", interrupted)
    assert main(argv) == 130 and capsys.readouterr().err == "error: interrupted\n"


def test_progress_bar_on_a_terminal_and_the_verbosity_levels(capsys):
    row = {"step": 3, "total_steps": 10, "loss_mlm": 5.25, "loss_jepa": 0.5, "lr": 1e-3, "objective": "hybrid"}
    with Progress(level=0, fmt="text", title="train hybrid/tiny", total=10, terminal=True) as bar:
        assert bar.bar_on and not bar.lines_on and not bar.json_rows
        bar(row)
    out, err = capsys.readouterr()
    assert out == "" and "train hybrid/tiny" in err and "3/10" in err and "step 3/10" not in err
    with Progress(level=1, fmt="text", title="t", total=None, terminal=True) as both:
        both(row)
    assert "step 3/10 loss_mlm=5.25 loss_jepa=0.5 lr=0.001" in capsys.readouterr().err
    for level, fmt in ((-1, "text"), (-1, "json")):
        with Progress(level=level, fmt=fmt, title="t", total=None, terminal=True) as quiet:
            quiet(row)
        assert capsys.readouterr() == ("", "")
    with Progress(level=1, fmt="json", title="t", total=None, terminal=False) as verbose_json:
        verbose_json(row)
    out, err = capsys.readouterr()
    assert json.loads(out) == row and err == "step 3/10 loss_mlm=5.25 loss_jepa=0.5 lr=0.001\n"


def test_cli_restarts_a_run_killed_before_its_first_checkpoint_with_a_one_line_warning(corpus_file, tmp_path,
                                                                                        capsys):
    out = tmp_path / "run"

    def killed(row):
        raise KeyboardInterrupt  # as Ctrl-C at step 1, before the first checkpoint

    with pytest.raises(KeyboardInterrupt):
        trainer.run("mlm", "tiny", corpus_file, out, steps=2, device="cpu", overrides=SMALL, progress=killed)
    assert main(_argv(corpus_file, out, "--quiet", "--resume", overrides=SMALL)) == 0
    stdout, err = capsys.readouterr()
    assert err.strip() == (f"warning: resume: {str(out)!r} holds a run that stopped before its first checkpoint "
                           "(run.json names no checkpoint yet), so there is nothing to resume; starting it again "
                           "from step 0.")  # -q silences progress, not the trainer's warnings
    assert SUMMARY.fullmatch(stdout.strip())
    assert json.loads((out / "run.json").read_text())["latest"] == "checkpoints/step-0000002"


def test_summary_counts_the_steps_this_call_trained(corpus_file, tmp_path, capsys):
    """Resumed from a checkpoint, the summary counts only the new steps; a finished run resumed trains 0."""
    out = tmp_path / "run"
    assert main(_argv(corpus_file, out, "--quiet", overrides=(*SMALL, "train.ckpt_every=1", "train.stop_after=1"))) == 0
    assert SUMMARY.fullmatch(capsys.readouterr().out.strip()).group(1) == "1"
    assert main(_argv(corpus_file, out, "--quiet", "--resume")) == 0
    steps, checkpoint = SUMMARY.fullmatch(capsys.readouterr().out.strip()).groups()
    assert steps == "1" and checkpoint.endswith("step-0000002")
    assert main(_argv(corpus_file, out, "--quiet", "--resume")) == 0
    assert SUMMARY.fullmatch(capsys.readouterr().out.strip()).group(1) == "0"
