"""The cloud side of the CLI: ``taxifare setup``, ``submit`` and ``schedule``, one concern per module.

* :mod:`base.cloud_checks` (below every layer, as ``taxifare batch-predict --model`` uses them too): checks of
  project, region, bucket, pipeline root, accounts, network, labels, times, ids.
* :mod:`~pipeline.cloud.cron`: the schedules' cron, checked once, converted for Kubeflow.
* :mod:`~pipeline.cloud.template`: the compiled YAML sent (kind, step images, parameters), compiled for ``--image``.
* :mod:`~pipeline.cloud.credentials`: which credentials a call uses, looked up last.
* :mod:`~pipeline.cloud.vertex_jobs`: Vertex AI ``PipelineJob`` (built in one place) and ``PipelineJobSchedule``.
* :mod:`~pipeline.cloud.kubeflow`: runs and recurring runs on a self-hosted Kubeflow Pipelines.
* :mod:`~pipeline.cloud.setup`: the bucket and its bucket-level grants.
* :mod:`~pipeline.cloud.cli` (flags) and :mod:`~pipeline.cloud.commands` (what the commands do with them).
"""
