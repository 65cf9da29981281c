"""Vertex AI Experiments: a submitted run joins an experiment, so the console compares runs side by side.

A ``PipelineJob`` submitted with ``experiment=NAME`` is added to that Vertex AI Experiment
(created on first use): the console's experiment page then lists each run with its pipeline
parameters and the metrics its steps logged (verify_export's ``Metrics`` artifact: test RMSE,
the baselines' RMSE, the deployed model's), and compares the runs you tick.
:func:`submit_in_experiment` is what ``taxifare submit`` calls instead of ``job.submit``.
"""

from __future__ import annotations

import re
from typing import Any

#: The experiment runs join unless told otherwise.
DEFAULT_EXPERIMENT = "taxifare"
#: Vertex AI's rule for experiment names (a metadata context id).
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,127}$")


def check_experiment(name: str) -> str:
    """The experiment name, or an error naming the rule.

    Raises:
        InputError: when Vertex AI would refuse the name.
    """
    from base.errors import InputError

    if not _NAME.match(name):
        raise InputError(f"experiment {name!r}: use 1-128 lowercase letters, digits and hyphens, starting with a letter or digit")
    return name


def experiment_link(project: str, region: str, name: str) -> str:
    """The console page comparing the experiment's runs."""
    return f"https://console.cloud.google.com/vertex-ai/experiments/locations/{region}/experiments/{name}/runs?project={project}"


def submit_in_experiment(job: Any, experiment: str, *, service_account: str | None = None, network: str | None = None) -> str:
    """Submit ``job`` (an ``aiplatform.PipelineJob``) as a run of ``experiment``; return the experiment's console link.

    The SDK creates the experiment when it is missing, then adds the job's run context to it.
    """
    check_experiment(experiment)
    job.submit(service_account=service_account, network=network, experiment=experiment)
    return experiment_link(job.project, job.location, experiment)
