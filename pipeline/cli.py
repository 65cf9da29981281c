"""The ``taxifare`` command line.

Each subcommand imports what it needs when it runs, so ``taxifare --help`` is instant.
User mistakes (a path, a parameter, the data) end with one ``error:`` line and exit code 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from base.errors import Command, OneLineParser

#: The commands of this module (and their subcommands), as in :data:`serving.cli.COMMANDS`.
COMMANDS: dict[str, Command] = {
    "data": {"help": "make or check data sets", "description": "Make or check taxi-trip CSV data sets."},
    "data generate": {
        "help": "write seeded synthetic NYC trips as train/valid/test CSV",
        "description": "Write seeded synthetic NYC taxi trips as train.csv, valid.csv and test.csv (80/10/10) in the lab's "
        "CSV layout, calibrated against real trips (Manhattan hot spots, the airports, flat JFK fares).",
    },
    "data check": {
        "help": "validate CSV files and print what would be dropped",
        "description": "Validate taxi CSV files row by row and print counts per drop reason, examples and column statistics.",
    },
    "run": {
        "help": "run the whole pipeline on this machine (kfp.local)",
        "description": "Run stage_data -> check_drift -> smoke_train -> tune -> full_train -> verify_export -> deploy on this "
        "machine with kfp.local (one process per step, no Docker, cache on). Prints one line per step and a summary; the "
        "full log goes to a file.",
    },
    "compile": {
        "help": "write compiled/taxifare_pipeline.yaml, compiled/taxifare_vertex.yaml and compiled/taxifare_vertex_email.yaml",
        "description": "Compile the pipelines for the pipeline UI or for submission: the local/Kubeflow DAG, the Vertex AI "
        "variant, and the Vertex AI variant inside Vertex's e-mail notification (its notify_emails parameter names the "
        "recipients).",
    },
    "runs": {
        "help": "list local runs; `runs show RUN`, `runs compare RUN RUN...`",
        "description": "List the runs of `taxifare run` under the pipeline root, newest first: time, source, the parameters "
        "that differ from the defaults, test RMSE, verdict, deployed version, duration and status. Also refreshes the runs "
        "page (index.html beside the pipeline root). RUN is a run's folder name, a unique part of it, 'latest', or -N (the "
        "N-th newest).",
    },
    "runs show": {"help": "everything about one run", "description": "Parameters, steps, metrics and paths of one run."},
    "runs compare": {
        "help": "runs side by side",
        "description": "Parameters and metrics of several runs side by side, the test RMSE difference, links to reports and "
        "TensorBoard logs.",
    },
    "train": {
        "help": "run the trainer (python -m trainer.task); see `taxifare train --help`",
        "description": "Run the trainer; every flag is passed to python -m trainer.task.",
    },
}


def _add_data(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from pipeline import parameters
    from trainer.validation import MAX_BAD_FRACTION

    data = sub.add_parser("data", **COMMANDS["data"])
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="{generate,check}")
    gen = data_sub.add_parser("generate", **COMMANDS["data generate"])
    gen.add_argument("--rows", type=int, default=100_000, help="total rows over the three files (default %(default)s)")
    gen.add_argument("--out", required=True, help="output directory (created if missing)")
    seed = parameters.BY_NAME["seed"].default  # the pipeline's
    gen.add_argument("--seed", type=int, default=seed, help="random seed: the same seed gives the same files (default %(default)s)")
    gen.add_argument("--datetime", action="store_true", help="write the course's later layout, with pickup_datetime as the second column")
    chk = data_sub.add_parser("check", **COMMANDS["data check"])
    chk.add_argument("paths", nargs="+", help="files, globs or directories (also several separated by commas); local or gs://")
    chk.add_argument(
        "--max_bad_fraction",
        type=float,
        default=MAX_BAD_FRACTION,
        help="exit with an error (code 2) when a larger share of rows is bad, as the trainer stops (default %(default)s)",
    )


def _data(args: argparse.Namespace) -> int:
    import json

    if args.data_command == "generate":
        from base import storage
        from trainer import synthetic
        from trainer.schema import Variant

        storage.check_output_dir(args.out, "--out")

        progress = synthetic.main_progress if args.rows >= 500_000 else None
        result = synthetic.generate(
            args.rows, args.out, seed=args.seed, variant=Variant.DATETIME if args.datetime else Variant.LAB, progress=progress
        )
        for split, path in result.paths.items():
            print(f"{split:5s} {result.rows[split]:>10,} rows  {path}")
        print(f"generated {sum(result.rows.values()):,} rows in {result.seconds:.1f}s (seed {args.seed})")
        return 0
    from base import checks
    from trainer import validation

    checks.unit_fraction("--max_bad_fraction", args.max_bad_fraction)
    patterns = [part for arg in args.paths for part in arg.split(",") if part.strip()]
    report = validation.scan(patterns, max_bad_fraction=None, log_drops=False)  # printed here, once
    print(report.summary())
    for example in report.examples:
        print(f"  dropped {example}")
    print(json.dumps(report.as_dict()["columns"], indent=2))
    report.check(args.max_bad_fraction)  # past the limit: one error line, exit code 2 (as the trainer)
    return 0


def _escaped(text: str) -> str:
    """``text`` as argparse help (which formats it with ``%``: a literal percent sign is doubled)."""
    return text.replace("%", "%%")


def _add_pipeline_parameters(parser: argparse.ArgumentParser) -> None:
    """One flag per pipeline parameter (and front-door setting), from :mod:`pipeline.parameters`."""
    from pipeline import parameters

    group = parser.add_argument_group("pipeline parameters")
    for param in parameters.for_target(parameters.LOCAL, pipeline_only=False):
        if not param.run_flag:
            continue  # a flag of its own (a local path)
        if param.type is bool:
            flag_help = _escaped(param.help)
            group.add_argument(param.flag, dest=param.name, action=argparse.BooleanOptionalAction, default=param.default, help=flag_help)
        else:
            group.add_argument(
                param.flag,
                dest=param.name,
                type=param.type,
                default=param.default,
                help=_escaped(f"{param.help} (default: {param.default!r})"),
            )


def _add_run(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    run = sub.add_parser("run", **COMMANDS["run"])
    run.add_argument("--pipeline-root", default=os.path.join("runs", "pipeline"), help="where step outputs go (default %(default)s)")
    run.add_argument(
        "--serving-root", default=os.path.join("runs", "serving"), help="where deploy publishes model versions (default %(default)s)"
    )
    run.add_argument("--log-file", default=None, help="file for the raw step logs (default: <pipeline-root>/taxifare-run.log)")
    run.add_argument("--no-cache", action="store_true", help="run every step even when an earlier run has its outputs")
    run.add_argument("--cache-root", default=None, help="where the step cache lives (default: <pipeline-root>/.kfp_cache)")
    run.add_argument(
        "--verbose", action="store_true", help="keep TensorFlow's own start-up lines and kfp's local-runner warnings in the step log"
    )
    _add_pipeline_parameters(run)

    comp = sub.add_parser("compile", **COMMANDS["compile"])
    from pipeline.compile import TARGETS

    comp.add_argument(
        "--target", choices=[*TARGETS, "all"], default="all", help="which pipeline to compile (default %(default)s: every one)"
    )
    comp.add_argument("--output", default=None, help="the YAML to write, with one --target (default compiled/taxifare_<target>.yaml)")
    comp.add_argument("--image", default=None, help="container image of every step (default: the project's image name)")


def _check_run_paths(args: argparse.Namespace, log_file: str) -> None:
    """Refuse unwritable run folders before anything is created (one line each, exit code 2)."""
    from base.storage import check_output_dir, check_output_file

    check_output_dir(args.pipeline_root, "--pipeline-root")
    check_output_dir(args.cache_root or os.path.join(args.pipeline_root, ".kfp_cache"), "--cache-root")
    check_output_dir(args.serving_root, "--serving-root")
    check_output_file(log_file, "--log-file")


def _run(args: argparse.Namespace) -> int:
    from pipeline import local_run, parameters, runs_text

    settings = {p.name: getattr(args, p.name) for p in parameters.for_target(parameters.LOCAL, pipeline_only=False) if p.run_flag}
    settings["serving_root"] = os.path.abspath(args.serving_root)
    parameters.check_params(settings)
    arguments = parameters.pipeline_arguments(settings)
    log_file = args.log_file or os.path.join(args.pipeline_root, "taxifare-run.log")
    _check_run_paths(args, log_file)
    print(
        f"taxifare pipeline: source={arguments['source']}, train_steps={arguments['train_steps']}; step log: {os.path.abspath(log_file)}",
        flush=True,
    )
    _quiet_run(args.verbose)
    result = local_run.run_local(
        arguments,
        pipeline_root=args.pipeline_root,
        log_path=log_file,
        cache=not args.no_cache,
        cache_root=args.cache_root,
    )
    print(runs_text.summarize(result, arguments["serving_root"], arguments["model_name"]))
    return 0 if result.ok else 1


def _quiet_run(verbose: bool) -> None:
    """Leave TensorFlow's start-up lines (every step) and kfp.local's warnings about the spec out of the log, unless verbose.

    The kfp.local process and the steps' processes inherit the setting (see :mod:`pipeline.local_kfp`).
    """
    from trainer import quiet

    quiet.set_verbose(verbose or quiet.verbose())


def _add_runs(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    runs = sub.add_parser("runs", **COMMANDS["runs"])
    runs.add_argument("--pipeline-root", default=os.path.join("runs", "pipeline"), help="where the runs are (default %(default)s)")
    runs_sub = runs.add_subparsers(dest="runs_command", metavar="{show,compare}")
    show = runs_sub.add_parser("show", **COMMANDS["runs show"])
    show.add_argument("run", help="a run's folder name, a unique part of it, 'latest' or -N")
    compare = runs_sub.add_parser("compare", **COMMANDS["runs compare"])
    compare.add_argument("run", nargs="+", help="two or more runs (folder names, unique parts of them, 'latest' or -N)")


def _runs(args: argparse.Namespace) -> int:
    from base.errors import InputError
    from pipeline import runs, runs_page, runs_text

    if args.runs_command == "show":
        print(runs_text.format_show(runs.find_run(args.pipeline_root, args.run)))
        return 0
    if args.runs_command == "compare":
        if len(args.run) < 2:
            raise InputError("runs compare needs at least two runs, e.g. `taxifare runs compare -2 -1`")
        print(runs_text.format_compare([runs.find_run(args.pipeline_root, key) for key in args.run]))
        return 0
    listed = runs.list_runs(args.pipeline_root)
    print(runs_text.format_list(listed))
    if listed:
        print(f"\nRuns page: {runs_page.write_index(args.pipeline_root)}")
    return 0


def _compile(args: argparse.Namespace) -> int:
    from base.errors import InputError
    from components.common import DEFAULT_IMAGE
    from pipeline.compile import TARGETS, compile_pipeline

    targets = list(TARGETS) if args.target == "all" else [args.target]
    if args.output and len(targets) > 1:
        raise InputError(f"--output needs one --target ({', '.join(TARGETS)})")
    for target in targets:
        print(f"wrote {compile_pipeline(args.output, image=args.image or DEFAULT_IMAGE, target=target)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``taxifare`` parser with every subcommand."""
    p = OneLineParser(
        prog="taxifare",
        description="Take the taxi-fare model from data to a verified, deployed model: locally or on Vertex AI.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    from serving.cli import add_commands as add_serving_commands

    add_serving_commands(sub)
    from pipeline.cloud.cli import add_commands as add_cloud_commands

    add_cloud_commands(sub)
    _add_data(sub)
    _add_run(sub)
    _add_runs(sub)
    sub.add_parser("train", **COMMANDS["train"], add_help=False)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``taxifare`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "train":
        from trainer import task

        task.run(argv[1:])  # ends the process (see trainer.task.run)
    args = build_parser().parse_args(argv)
    from serving.cli import COMMANDS as SERVING_COMMANDS

    if args.command in SERVING_COMMANDS:
        from serving.cli import run as run_serving

        return run_serving(args)
    if args.command in ("setup", "submit", "schedule"):
        from pipeline.cloud.cli import run as run_cloud

        return run_cloud(args)
    from base.errors import InputError

    try:
        if args.command == "data":
            return _data(args)
        if args.command == "run":
            return _run(args)
        if args.command == "compile":
            return _compile(args)
        if args.command == "runs":
            return _runs(args)
    except (InputError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    raise AssertionError(f"unhandled command {args.command}")  # pragma: no cover


if __name__ == "__main__":
    sys.exit(main())
