# The one image every pipeline step and the trainer run in (compile-time setting: taxifare compile --image).
#   docker build -t REGION-docker.pkg.dev/PROJECT/taxifare/taxifare:0.1.0 .
# Pipeline steps: kfp runs `sh -ec '... python3 -m kfp.dsl.executor_main ...'` as the command,
# which replaces CMD. Trainer (Vertex custom job): `python -m trainer.task --train_data_paths ...`.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_CPP_MIN_LOG_LEVEL=2

WORKDIR /app

# The project and its runtime dependencies, at the versions of the lock file (used as
# constraints, so the dev tools it also pins stay out of the image).
COPY requirements.lock pyproject.toml README.md ./
COPY base/ base/
COPY trainer/ trainer/
COPY components/ components/
COPY pipeline/ pipeline/
COPY serving/ serving/
RUN pip install --no-cache-dir -c requirements.lock . \
    && useradd --create-home --uid 10001 --user-group taxifare

USER 10001
WORKDIR /home/taxifare

# No ENTRYPOINT: kfp and Vertex custom jobs give the full command. Alone, the image prints the CLI's help.
CMD ["taxifare", "--help"]
