"""The `taxifare` command line: every subcommand's every flag is documented; user errors are one line."""

import argparse
import subprocess
import sys

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
    assert proc.returncode == 2 and proc.stderr.strip() == "error: --output needs one --target (local or vertex)"
