"""``python -m trainer``: flags map onto run(), one-line errors with exit code 2, JSON lines on stdout."""

from __future__ import annotations

import json

import pytest

from trainer.__main__ import build_parser, main

from .conftest import SMALL


def test_cli_runs_and_prints_json_lines(corpus_file, tmp_path, capsys):
    argv = ["--objective", "mlm", "--preset", "tiny", "--corpus", str(corpus_file), "--out", str(tmp_path / "run"),
            "--steps", "2", "--device", "cpu"]
    for item in (*SMALL, "train.log_every=1"):
        argv += ["--set", item]
    assert main(argv) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.strip().splitlines()]
    assert [x["step"] for x in lines[:-1]] == [1, 2]
    assert lines[-1]["summary"]["steps"] == 2 and lines[-1]["summary"]["final_checkpoint"].endswith("step-0000002")


def test_cli_bad_override_is_one_line_exit_2(corpus_file, tmp_path, capsys):
    code = main(["--objective", "hybrid", "--preset", "tiny", "--corpus", str(corpus_file), "--out",
                 str(tmp_path / "r"), "--set", "optim.lr=fast"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: optim.lr: expected a number") and "\n" not in err


def test_parser_choices_and_help_lists_keys():
    parser = build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["--objective", "jepa", "--preset", "tiny", "--corpus", "x", "--out", "y"])
    assert "optim.lr" in parser.format_help()
    args = parser.parse_args(["--objective", "hybrid", "--preset", "base", "--corpus", "sample:wiki", "--out", "o",
                              "--resume", "--set", "a=1", "--set", "b=2"])
    assert args.resume and args.overrides == ["a=1", "b=2"] and args.device == "auto"


def test_cli_restarts_a_run_killed_before_its_first_checkpoint_with_a_one_line_warning(corpus_file, tmp_path,
                                                                                        capsys):
    import trainer

    out = tmp_path / "run"

    def killed(row):
        raise KeyboardInterrupt  # as Ctrl-C at step 1, before the first checkpoint

    with pytest.raises(KeyboardInterrupt):
        trainer.run("mlm", "tiny", corpus_file, out, steps=2, device="cpu", overrides=SMALL, progress=killed)
    argv = ["--objective", "mlm", "--preset", "tiny", "--corpus", str(corpus_file), "--out", str(out), "--steps",
            "2", "--device", "cpu", "--quiet", "--resume"]
    for item in SMALL:
        argv += ["--set", item]
    assert main(argv) == 0
    err = capsys.readouterr().err.strip()
    assert err == (f"warning: resume: {str(out)!r} holds a run that stopped before its first checkpoint (run.json "
                   "names no checkpoint yet), so there is nothing to resume; starting it again from step 0.")
    assert json.loads((out / "run.json").read_text())["latest"] == "checkpoints/step-0000002"
