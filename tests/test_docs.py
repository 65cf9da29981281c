"""The commands in README.md and docs/*.md run as written.

Every ``taxifare ...``, ``make ...`` and ``python -m trainer.task ...`` line of a ```bash block
is parsed by the command's own parser (each flag must be one its ``--help`` lists, and every
value must be accepted), and the cloud ids in them pass the project's own validators
(:mod:`base.cloud_checks`), so a reader can paste any of them.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest

from base import cloud_checks

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_FENCE = re.compile(r"^```(\w*)\s*$")
_ASSIGN = re.compile(r"^([A-Z_][A-Z0-9_]*)=(\S+)$")
#: The README's length in lines: one screen and a bit (issue 20).
README_MAX_LINES = 120


def bash_blocks(text: str) -> Iterator[tuple[int, list[str]]]:
    """``(first line number, lines)`` of every ```bash / ```sh block."""
    block: list[str] | None = None  # the lines of the fenced block we are in
    is_bash, start = False, 0
    for number, line in enumerate(text.splitlines(), 1):
        fence = _FENCE.match(line)
        if block is None and fence:
            block, is_bash, start = [], fence.group(1) in ("bash", "sh", "shell"), number + 1
        elif block is not None and line.startswith("```"):
            if is_bash:
                yield start, block
            block = None
        elif block is not None:
            block.append(line)


def commands(lines: list[str]) -> Iterator[list[str]]:
    """The commands of a block as argv lists (continuations joined, comments dropped, ``$VARS`` of the block expanded)."""
    joined: list[str] = []
    for line in lines:
        if joined and joined[-1].endswith("\\"):
            joined[-1] = joined[-1][:-1] + " " + line.strip()
        else:
            joined.append(line)
    variables: dict[str, str] = {}
    for line in joined:
        if not line.strip() or line.startswith(" "):  # blank, or output shown under a command
            continue
        argv = shlex.split(line, comments=True)
        if len(argv) == 1 and (assign := _ASSIGN.match(argv[0])):
            variables[assign.group(1)] = assign.group(2)
            continue
        argv = [re.sub(r"\$(\w+)", lambda m: variables.get(m.group(1), m.group(0)), arg) for arg in argv]
        part: list[str] = []
        for arg in [*argv, "&&"]:  # a one-liner's commands are checked one by one
            if arg not in ("||", "&&", ";", "|"):
                part.append(arg)
                continue
            if part:
                part[0] = part[0].removeprefix(".venv/bin/")
                yield part
            part = []


def documented_commands() -> list[tuple[str, list[str]]]:
    """``(where, argv)`` of every checked command in the docs."""
    found = []
    for path in DOCS:
        for start, lines in bash_blocks(path.read_text(encoding="utf-8")):
            for argv in commands(lines):
                if argv[0] in ("taxifare", "make") or argv[:3] == ["python", "-m", "trainer.task"]:
                    found.append((f"{path.relative_to(ROOT)} (block at line {start})", argv))
    return found


def _parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """``parser.parse_args(argv)``, with argparse's complaint as the failure message."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return parser.parse_args(argv)
    except SystemExit:
        pytest.fail(f"{shlex.join(argv)!r} is refused: {err.getvalue().strip().splitlines()[-1]}")


def _subparser(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.ArgumentParser:
    """The (sub)command's own parser: the one whose ``--help`` the flags must be in."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for arg in argv:
                if arg in action.choices:
                    rest = argv[argv.index(arg) + 1 :]
                    return _subparser(action.choices[arg], rest)
    return parser


def _check_flags(parser: argparse.ArgumentParser, argv: list[str]) -> None:
    help_text = _subparser(parser, argv).format_help()
    for arg in argv:
        flag = arg.split("=", 1)[0]
        if flag.startswith("--"):
            assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", help_text), f"{flag} is not in the --help of {shlex.join(argv)}"


def _check_cloud_ids(args: argparse.Namespace) -> None:
    """The ids a reader pastes pass the same checks the cloud commands run first."""
    values = vars(args)
    if values.get("project"):
        cloud_checks.check_project(values["project"])
    if values.get("region"):
        cloud_checks.check_region(values["region"])
    if values.get("bucket"):
        cloud_checks.check_bucket_name(values["bucket"])
    if values.get("pipeline_root") and str(values["pipeline_root"]).startswith("gs://"):
        cloud_checks.check_pipeline_root(values["pipeline_root"])
    for key in ("service_account", "training_service_account"):
        if values.get(key) and not values.get("kfp_host"):
            cloud_checks.check_service_account(values[key], "--" + key.replace("_", "-"))


def check_command(argv: list[str]) -> None:
    """Fail unless ``argv`` parses with its command's parser and its ids are valid."""
    if argv[0] == "make":
        makefile = (ROOT / "Makefile").read_text()
        for target in argv[1:]:
            assert re.search(rf"^{re.escape(target)}:", makefile, re.M), f"make {target}: no such target in the Makefile"
        return
    from trainer import task

    if argv[0] == "python" or argv[1] == "train":  # the trainer (taxifare train passes its flags through)
        rest = argv[3:] if argv[0] == "python" else argv[2:]
        parser = task.build_parser()
        _check_flags(parser, rest)
        _parse(parser, rest)
        return
    from pipeline.cli import build_parser

    parser = build_parser()
    _check_flags(parser, argv[1:])
    _check_cloud_ids(_parse(parser, argv[1:]))


def test_the_docs_have_commands_to_check() -> None:
    found = documented_commands()
    readme = [argv for where, argv in found if where.startswith("README")]
    assert len(found) >= 25 and len(readme) >= 8, found
    assert ["make", "run"] in readme and ["make", "test"] in readme


@pytest.mark.parametrize(("where", "argv"), documented_commands(), ids=lambda value: value if isinstance(value, str) else "")
def test_documented_command_runs_as_written(where: str, argv: list[str]) -> None:
    check_command(argv)


def test_a_wrong_flag_or_id_is_caught() -> None:
    """The check can fail: an unknown flag, a flag of another command, an invalid project id."""
    for bad in (
        ["taxifare", "run", "--max_bad_fraction", "0.2"],  # the trainer's spelling, not run's
        ["taxifare", "data", "check", "a.csv", "--rows", "3"],
        ["python", "-m", "trainer.task", "--train-data-paths", "a", "--eval_data_paths", "b"],
        ["taxifare", "setup", "--project", "P", "--region", "us-central1", "--bucket", "b-taxifare", "--dry-run"],
        ["make", "deploy"],
    ):
        with pytest.raises((AssertionError, pytest.fail.Exception, cloud_checks.InputError)):
            check_command(bad)


def test_readme_fits_a_screen_and_a_bit() -> None:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move detail to docs/"
    assert lines[2:6] == [
        "```bash",
        "make run    # creates .venv, installs the locked stack, runs the whole pipeline on this machine",
        "make test   # creates .venv, installs the locked stack, runs ruff, mypy and the whole test suite",
        "```",
    ]


def test_readme_links_resolve() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    for target in re.findall(r"\]\(([^)#]+)", text):
        assert (ROOT / target).exists(), f"README links to {target}, which is missing"
