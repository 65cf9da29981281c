"""The exit step as a kfp component: a thin wrapper of :mod:`components.run_summary.logic`.

run_summary runs after the other steps whatever happened (the pipeline's ``dsl.ExitHandler``):
it writes the run's summary and, when ``notify_webhook`` is set, POSTs it there.
"""

from kfp.dsl import Artifact, Output, PipelineTaskFinalStatus

from components.common import step


@step
def run_summary(status: PipelineTaskFinalStatus, run_name: str, notify_webhook: str, summary: Output[Artifact]) -> str:
    """Summarize the finished run (status, failed step, log tail, link) into ``summary``; notify the webhook; return the status."""
    from components.common import started

    started("run_summary", output=summary.path)  # first: a failure from here on is this step's

    from components.run_summary.logic import run_summary_step

    result = run_summary_step(status, run_name=run_name, notify_webhook=notify_webhook, summary_path=summary.path)
    summary.metadata.update({"status": result.status, "failed_step": result.failed_step, "link": result.link})
    return result.status
