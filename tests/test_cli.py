"""The `taxifare` command line: every subcommand's every flag is documented; user errors are one line."""

import argparse
import subprocess
import sys

import pytest
from conftest import ROOT

from pipeline.cli import build_parser


def walk(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from walk(sub, (*path, name))


def test_every_flag_of_every_subcommand_has_help():
    seen = []
    for path, parser in walk(build_parser()):
        seen.append(" ".join(path))
        if path == ("train",):
            continue  # passed through to `python -m trainer.task`, tested in test_trainer.py
        for action in parser._actions:
            if action.option_strings and not isinstance(action, argparse._HelpAction):
                assert action.help, f"taxifare {' '.join(path)} {action.option_strings[0]} has no help"
    for command in ("run", "compile", "data generate", "data check", "serve", "predict", "setup", "submit", "schedule create"):
        assert command in seen


def test_help_runs_for_the_main_commands():
    for command in (["--help"], ["run", "--help"], ["train", "--help"]):
        proc = subprocess.run([sys.executable, "-m", "pipeline.cli", *command], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0 and "usage:" in proc.stdout, proc.stderr


def test_compile_output_needs_one_target(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "compile", "--output", str(tmp_path / "x.yaml")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2 and proc.stderr.strip() == "error: --output needs one --target (local, vertex, vertex-email)"


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["run", "--max-drift", "abc"], "--max-drift"),
        (["run", "--train-steps", "1.5"], "--train-steps"),
        (["serve", "--rest-port", "x"], "--rest-port"),
        (["runs", "--no-such-flag"], "--no-such-flag"),
    ],
)
def test_a_bad_flag_value_is_one_line_and_exit_2(argv, flag, capsys):
    from pipeline.cli import main as taxifare_main

    with pytest.raises(SystemExit) as exc:
        taxifare_main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and flag in err[0] and "--help" in err[0], err


def test_the_trainer_answers_a_bad_flag_value_in_one_line(capsys):
    from trainer.task import build_parser

    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["--train_steps", "x"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["python -m trainer.task: error: argument --train_steps: invalid int value: 'x' (see python -m trainer.task --help)"]
