"""The process that runs the DAG with ``kfp.local`` for ``taxifare run``: ``python -m pipeline.local_kfp REQUEST``.

:mod:`pipeline.local_run` starts it with its standard output and error going to the step log,
so everything kfp.local prints (its task lines, every executor input and output, the steps'
own lines) lands there while the runner's own streams and loggers are left alone: kfp.local
prints through ``sys.stdout`` and the root logger of the process it runs in, and this process
is that one. ``REQUEST`` is a JSON file: the pipeline ``arguments``, ``pipeline_root``,
``workspace_root``, ``cache``, ``cache_root``, ``image`` and ``records`` (the folder of the
run's events file).

Beside the steps' own records (:mod:`components.common`) it writes:

* ``plan``: every step task of the compiled DAG (read from its public ``pipeline_spec``) in
  the order kfp.local runs them, with the tasks it runs after, the condition groups around it,
  whether kfp may take it from the cache and how many attempts it has;
* ``cache_hit``: which cache entry a task reused (see :class:`CacheHits`);
* ``pipeline``: ``ended``, or ``failed`` with kfp's own error (a full disk under the pipeline root).
"""

from __future__ import annotations

import io
import json
import logging
import sys
import traceback
from typing import Any

from components.contracts import append_event

#: A task that runs whatever happened to the tasks before it (the exit handler's task).
_EXIT_STRATEGY = "ALL_UPSTREAM_TASKS_COMPLETED"


class CacheHits(logging.Filter):
    """Records kfp.local's cache hits: the one fact of a run that kfp.local tells only in its log.

    kfp.local 2.17 returns nothing per task from a pipeline run (the call returns the pipeline's
    outputs, none here), and which entry of its cache a task reused is said only by
    ``kfp.local.orchestrator.task_executor.execute_single_task`` in one log message, ``Task
    <task> cache hit (key=<first 12 characters of the key>); skipping execution.``. That a step
    came from the cache is known without it (no records of its own, see
    :mod:`pipeline.local_run`); the key says which earlier run made its outputs (the run record's
    ``cached_from``, a cached full_train's TensorBoard logs, and the entry to drop when
    verify_export fails on it). This filter on the root logger of this process (where kfp.local
    logs) takes the task and the key from that message, and nothing else.
    """

    def __init__(self, records: str) -> None:
        """Write ``cache_hit`` records into the folder ``records``."""
        super().__init__()
        self.records = records

    def filter(self, record: logging.LogRecord) -> bool:
        """Record a cache hit; keep every record for the log."""
        if record.funcName == "execute_single_task":
            task, hit, rest = record.getMessage().removeprefix("Task ").partition(" cache hit (key=")
            if hit:
                append_event(self.records, {"event": "cache_hit", "task": task, "key": rest.partition(")")[0]})
        return True


def plan(spec: Any) -> list[dict[str, Any]]:
    """The step tasks of a compiled pipeline (``pipeline_func.pipeline_spec``), in the order kfp.local runs them.

    Each: ``task`` (``batch-predict-2``), ``step`` (its function, ``batch_predict``), ``after``
    (every task that ends before it starts, through the groups around it), ``conditions`` (the
    names of the condition groups around it, outermost first), ``cache``, ``attempts`` and
    ``exit`` (it runs whatever happened before it).
    """
    from google.protobuf import json_format

    executors = json_format.MessageToDict(spec.deployment_spec).get("executors", {})
    tasks: list[dict[str, Any]] = []
    _walk(spec, executors, spec.root.dag, set(), (), tasks)
    return tasks


def _walk(
    spec: Any, executors: dict[str, Any], dag: Any, after: set[str], conditions: tuple[str, ...], out: list[dict[str, Any]]
) -> set[str]:
    """Append ``dag``'s step tasks to ``out``; return every task they cover, with what runs before them."""
    reach: dict[str, set[str]] = {}
    for name in _order(dag):
        task = dag.tasks[name]
        upstream = set(after).union(*(reach.get(dep, {dep}) for dep in task.dependent_tasks))
        component = spec.components[task.component_ref.name]
        if component.HasField("dag"):
            inner = (*conditions, task.task_info.name) if task.trigger_policy.condition else conditions
            reach[name] = upstream | _walk(spec, executors, component.dag, upstream, inner, out)
            continue
        args = executors.get(component.executor_label, {}).get("container", {}).get("args", [])
        step = args[args.index("--function_to_execute") + 1] if "--function_to_execute" in args else name.replace("-", "_")
        out.append(
            {
                "task": name,
                "step": step,
                "after": sorted(upstream),
                "conditions": list(conditions),
                "cache": bool(task.caching_options.enable_cache),
                "attempts": task.retry_policy.max_retry_count + 1,
                "exit": _is_exit(task),
            }
        )
        reach[name] = upstream | {name}
    return set().union(*reach.values()) if reach else set()


def _is_exit(task: Any) -> bool:
    return bool(task.trigger_policy.strategy == task.trigger_policy.TriggerStrategy.Value(_EXIT_STRATEGY))


def _order(dag: Any) -> list[str]:
    """The order kfp.local 2.17 runs a DAG's tasks in: its depth-first topological order, the exit tasks last."""
    body = {name: sorted(task.dependent_tasks) for name, task in dag.tasks.items() if not _is_exit(task)}
    order: list[str] = []

    def visit(name: str) -> None:
        seen.add(name)
        for dep in body[name]:
            if dep in body and dep not in seen:
                visit(dep)
        order.append(name)

    seen: set[str] = set()
    for name in body:
        if name not in seen:
            visit(name)
    return order + [name for name, task in dag.tasks.items() if _is_exit(task)]


def _quiet_kfp() -> None:
    """kfp.local's warnings about the spec stay out of the log, unless verbose.

    For every step it warns that the display name has no effect locally and that the image is
    not a Python image (the steps run in this environment, not in it): nothing a user can change.
    """
    import warnings

    from trainer import quiet

    if not quiet.verbose():
        warnings.filterwarnings("ignore", message=r"Task '[\w-]+': settings \['display_name'\] have no effect", category=UserWarning)
        warnings.filterwarnings("ignore", message=r"You may be attemping to run a task that uses custom or non-Python base image")


def main(argv: list[str] | None = None) -> int:
    """Run the pipeline as ``REQUEST`` says; 0 when kfp.local ran it to its end (whatever its steps did)."""
    with open((argv or sys.argv[1:])[0], encoding="utf-8") as fh:
        request = json.load(fh)
    records = request["records"]
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=True)  # the runner copies the log line by line as it comes
    _quiet_kfp()
    root = logging.getLogger()
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    root.addFilter(CacheHits(records))

    from kfp import local

    from pipeline.pipeline import create_pipeline

    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=request["pipeline_root"],
        workspace_root=request["workspace_root"],
        raise_on_error=False,
        enable_caching=request["cache"],
        cache_root=request["cache_root"],
    )
    pipeline_func = create_pipeline(image=request["image"])
    tasks = plan(pipeline_func.pipeline_spec)
    if not request["cache"]:
        tasks = [{**task, "cache": False} for task in tasks]
    append_event(records, {"event": "plan", "tasks": tasks})
    try:
        pipeline_func(**request["arguments"])
    except Exception as exc:  # kfp's own work failed (its writes under the pipeline root: disk full, read-only)
        traceback.print_exc()
        append_event(records, {"event": "pipeline", "status": "failed", "error": f"{type(exc).__name__}: {exc}"[:500]})
        return 1
    append_event(records, {"event": "pipeline", "status": "ended"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
