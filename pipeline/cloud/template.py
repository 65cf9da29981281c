"""The compiled pipeline a command sends: read, its kind, its step images, its parameters.

:func:`load_template` reads a compiled YAML once (a missing, unreadable, binary or non-pipeline
file is one line); :class:`Template` then answers which engine it is for (``vertex``: its steps
call the Vertex AI API through google-cloud-pipeline-components; ``kubeflow``: the local DAG,
which kfp.local and a Kubeflow cluster run), the images its steps run in, and its parameters'
types. :func:`check_parameters` converts ``--param`` strings to those types and applies the same
checks as ``taxifare run``. :func:`compile_for_image` compiles the project's pipeline for another
image, so ``submit --image`` needs no edited YAML.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Iterator, Mapping
from typing import Any

from base.errors import InputError

#: The templates ``taxifare compile`` writes, by kind.
DEFAULT_TEMPLATES = {
    "vertex": os.path.join("compiled", "taxifare_vertex.yaml"),
    "kubeflow": os.path.join("compiled", "taxifare_pipeline.yaml"),
}
_GCPC_IMAGE = "google-cloud-pipeline-components"
_ENGINE = {"vertex": "Vertex AI", "kubeflow": "Kubeflow Pipelines"}


@dataclasses.dataclass(frozen=True)
class Template:
    """A compiled pipeline spec and the file it came from."""

    path: str
    spec: dict[str, Any]

    @property
    def name(self) -> str:
        """The pipeline's name (``pipelineInfo.name``)."""
        return str(self.spec.get("pipelineInfo", {}).get("name") or "taxifare")

    @property
    def kind(self) -> str:
        """``vertex`` when a step runs a google-cloud-pipeline-components op, else ``kubeflow``."""
        return "vertex" if any(_GCPC_IMAGE in image for image in self.executor_images()) else "kubeflow"

    @property
    def parameter_types(self) -> dict[str, str]:
        """The pipeline's input parameters and their types (``NUMBER_INTEGER``, ``STRING``...)."""
        params = self.spec["root"].get("inputDefinitions", {}).get("parameters", {})
        return {name: p.get("parameterType", "STRING") for name, p in params.items()}

    @property
    def defaults(self) -> dict[str, Any]:
        """The pipeline's parameter defaults (those it has)."""
        params = self.spec["root"].get("inputDefinitions", {}).get("parameters", {})
        return {name: p["defaultValue"] for name, p in params.items() if "defaultValue" in p}

    def executor_images(self) -> list[str]:
        """The image of every executor of the spec."""
        executors = self.spec.get("deploymentSpec", {}).get("executors", {})
        return [str(e["container"]["image"]) for e in executors.values() if "container" in e and "image" in e["container"]]

    def step_images(self) -> list[str]:
        """The images the project's steps run in: executors (but the ops' own) and custom-job worker pools."""
        images = [i for i in self.executor_images() if _GCPC_IMAGE not in i]
        images += list(_image_uris(self.spec.get("components", {})))
        return list(dict.fromkeys(images))


def _image_uris(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("image_uri", "imageUri") and isinstance(value, str):
                yield value
            else:
                yield from _image_uris(value)
    elif isinstance(node, list):
        for item in node:
            yield from _image_uris(item)


def load_template(path: str) -> Template:
    """Read a compiled pipeline YAML.

    Raises:
        InputError: when the file is missing, a directory, unreadable, not text, not YAML or not a compiled pipeline.
    """
    import yaml

    fix = "pass a file written by taxifare compile"
    try:
        with open(path, encoding="utf-8") as fh:
            docs = [d for d in yaml.safe_load_all(fh) if d]
    except FileNotFoundError as exc:
        raise InputError(f"pipeline template {path!r} not found: compile it first (taxifare compile) or pass --template") from exc
    except IsADirectoryError as exc:
        raise InputError(f"pipeline template {path!r} is a directory: {fix}") from exc
    except PermissionError as exc:
        raise InputError(f"pipeline template {path!r} cannot be read (permission denied): {fix}") from exc
    except (UnicodeDecodeError, yaml.reader.ReaderError) as exc:
        raise InputError(f"pipeline template {path!r} is not a text file: {fix}") from exc
    except yaml.YAMLError as exc:
        raise InputError(f"pipeline template {path!r} is not YAML: {fix}") from exc
    spec = docs[0] if docs else {}
    if not isinstance(spec, dict) or not isinstance(spec.get("root"), dict):
        raise InputError(f"{path!r} is not a compiled pipeline (no 'root'): {fix}")
    return Template(path=path, spec=spec)


def check_kind(template: Template, engine: str) -> None:
    """Refuse a template made for the other engine.

    Raises:
        InputError: a local/Kubeflow template sent to Vertex AI, or a Vertex template sent to Kubeflow.
    """
    if template.kind == engine:
        return
    if engine == "vertex":
        raise InputError(
            f"{template.path!r} is the local/Kubeflow pipeline (it trains in a step and deploys to a local serving root), "
            f"not the Vertex AI one: pass --template {DEFAULT_TEMPLATES['vertex']} (the default) or leave --template out"
        )
    raise InputError(
        f"{template.path!r} is the Vertex AI pipeline (its steps call the Vertex AI API), which {_ENGINE['kubeflow']} does not run: "
        f"pass --template {DEFAULT_TEMPLATES['kubeflow']} (the default with --kfp-host) or leave --template out"
    )


def _image_problem(image: str, registry: bool = True) -> str | None:
    """What keeps a cloud from pulling ``image`` at a fixed version (its registry host only when ``registry``), or ``None``."""
    value = image.strip()
    host, slash, rest = value.partition("/")
    if registry and (not slash or not ("." in host or ":" in host or host == "localhost") or not rest):
        return "names no registry host, so Vertex AI cannot pull it"
    name, at, digest = value.partition("@")
    repository = name.rsplit(":", 1)[0] if ":" in name.rsplit("/", 1)[-1] else name
    path = repository.partition("/")[2] if registry or "." in host or ":" in host else repository
    if path != path.lower():
        return f"has capitals in its repository path {path!r} (repository names are lowercase)"
    if at:
        return None if re.fullmatch(r"sha256:[0-9a-f]{64}", digest) else "has a malformed digest (write @sha256:64 hex digits)"
    last = name.rsplit("/", 1)[-1]
    tag = last.rsplit(":", 1)[1] if ":" in last else ""
    if not tag or tag == "latest":
        return "is not pinned to a version (a tag such as :0.1.0, never :latest, or a @sha256 digest)"
    return None


def check_image(image: str, registry: bool = True) -> str:
    """An image a cloud can pull and a version can pin: ``REGISTRY_HOST/PATH:TAG`` (or ``@sha256:...``), tag not ``latest``.

    Args:
        image: the image reference.
        registry: require a registry host (Vertex AI); a Kubeflow cluster may have the image loaded.

    Raises:
        InputError: for an image without a registry host (when required), without a tag, or tagged ``latest``.
    """
    problem = _image_problem(image, registry)
    if problem:
        raise InputError(
            f"--image {image!r} {problem}: push the image and pass --image REGION-docker.pkg.dev/PROJECT/REPOSITORY/taxifare:VERSION"
        )
    return image.strip()


def check_step_images(template: Template) -> None:
    """Every step image of a template sent to Vertex AI must be pullable and pinned.

    Raises:
        InputError: naming the image and how to fix it (``--image`` compiles the pipeline for another one).
    """
    for image in template.step_images():
        problem = _image_problem(image)
        if problem:
            raise InputError(
                f"the template {template.path!r} runs its steps in {image!r}, which {problem}: push the image "
                "(docs/cloud.md) and pass --image REGION-docker.pkg.dev/PROJECT/REPOSITORY/taxifare:VERSION, which compiles "
                "the pipeline for it"
            )


def with_fingerprint(template: Template, values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` plus ``data_fingerprint`` of what the sources resolve to now, when the pipeline takes one.

    The fingerprint (:func:`components.stage_data.fingerprint.data_fingerprint`: local files' sizes and
    times, ``gs://`` generations, window bounds) keys stage_data's cache on the data, not only on
    the source's text. Lists ``gs://`` folders: call it after the credentials are found. A value
    given with ``--param data_fingerprint=`` is kept.

    Raises:
        InputError: a source that resolves to no file.
    """
    if "data_fingerprint" not in template.parameter_types or values.get("data_fingerprint"):
        return dict(values)
    from components.stage_data.fingerprint import data_fingerprint

    return {**values, "data_fingerprint": data_fingerprint({**template.defaults, **values})}


def compile_for_image(kind: str, image: str, directory: str, *, email: bool = False) -> Template:
    """Compile the project's pipeline of ``kind`` for ``image`` into ``directory`` and load it (``email``: the e-mail variant)."""
    from pipeline.compile import compile_pipeline

    target = "vertex-email" if email else {"vertex": "vertex", "kubeflow": "local"}[kind]
    path = compile_pipeline(os.path.join(directory, f"taxifare_{target}.yaml"), image=image, target=target)
    return load_template(path)


def coerce_parameters(template: Template, values: Mapping[str, Any]) -> dict[str, Any]:
    """Check parameter names against the template and convert ``name=value`` strings to their types.

    Raises:
        InputError: for a name the pipeline does not have or a value of the wrong type.
    """
    types = template.parameter_types
    out: dict[str, Any] = {}
    for name, value in values.items():
        if name not in types:
            raise InputError(f"the pipeline has no parameter {name!r}: use one of {', '.join(sorted(types))}")
        out[name] = _convert(name, value, types[name]) if isinstance(value, str) else value
    return out


def _convert(name: str, value: str, kind: str) -> Any:
    expected = {"NUMBER_INTEGER": "an integer", "NUMBER_DOUBLE": "a number", "BOOLEAN": "true or false"}.get(kind, kind)
    try:
        if kind == "NUMBER_INTEGER":
            return int(value)
        if kind == "NUMBER_DOUBLE":
            return float(value)
        if kind == "BOOLEAN":
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(value)
            return value.lower() in ("true", "1", "yes")
    except ValueError as exc:
        raise InputError(f"parameter {name}={value!r} is not {expected}") from exc
    return value


def check_parameters(template: Template, values: Mapping[str, Any]) -> dict[str, Any]:
    """``--param`` values checked as ``taxifare run`` checks them and converted to their types.

    The checks are the parameter table's (:func:`pipeline.parameters.checked`, for the template's
    target); a name must be a parameter of the template (or a front-door setting of the table,
    such as ``max_model_params``, which is checked and not sent). A template parameter the table
    does not know is converted to the template's type.

    Returns:
        The values the pipeline takes, by name.

    Raises:
        InputError: an unknown name, a value of the wrong type, or a value the pipeline would refuse.
    """
    from pipeline import parameters

    target = parameters.VERTEX if template.kind == "vertex" else parameters.LOCAL
    table = {p.name: p for p in parameters.for_target(target, pipeline_only=False)}
    types = template.parameter_types
    known = set(types) | {name for name, p in table.items() if not p.in_pipeline}
    for name in values:
        if name not in known:
            raise InputError(f"the pipeline has no parameter {name!r}: use one of {', '.join(sorted(known))}")
    if "notify_emails" in values and "notify_emails" not in types:
        raise InputError(
            f"the template {template.path!r} has no e-mail notification: pass --image to compile the pipeline with it, "
            "or a template written by `taxifare compile --target vertex-email`"
        )
    if target == parameters.VERTEX:
        _check_cloud_paths(values)
    checked = parameters.checked({n: v for n, v in values.items() if n in table}, target)
    others = coerce_parameters(template, {n: v for n, v in values.items() if n not in table})
    return {n: v for n, v in {**checked, **others}.items() if n in types}


#: Parameters naming files: on Vertex AI they must be on Cloud Storage (the steps run in the cloud).
_PATH_PARAMETERS = ("source", "eval_source", "test_source")


def _check_cloud_paths(values: Mapping[str, Any]) -> None:
    """``source``-like ``--param`` values sent to Vertex AI name Cloud Storage, not this machine.

    Raises:
        InputError: for a local path, or a ``gs://``/``/gcs/`` path with '.', '..' or blank segments.
    """
    from base.cloud_checks import check_object_path

    for name in _PATH_PARAMETERS:
        value = str(values.get(name) or "").strip()
        if not value or value in ("synthetic", "bigquery"):
            continue
        for part in (p.strip() for p in value.split(",")):
            if part.startswith("gs://") or part.startswith("/gcs/"):
                bucket_and_path = part.removeprefix("gs://").removeprefix("/gcs/")
                check_object_path(bucket_and_path, f"--param {name}={part!r}", "gs://BUCKET/data/*.csv")
            else:
                raise InputError(
                    f"--param {name}={part!r} is a path on this machine, which Vertex AI cannot read: copy the files to "
                    "Cloud Storage (gsutil cp) and pass gs://BUCKET/data/*.csv"
                )
