"""The pipeline: the DAG factory, compile, local run, Vertex submit/schedule/setup, the CLI."""
