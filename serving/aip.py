"""``taxifare serve`` as a Vertex AI custom serving container: settings from the ``AIP_*`` variables.

Vertex AI starts the container with (among others) these variables, and ``taxifare serve``
with no flags then serves as Vertex expects:

* ``AIP_MODE`` - ``PREDICTION`` when the container serves an endpoint;
* ``AIP_HTTP_PORT`` - the port to listen on (0.0.0.0), the first of ``containerSpec.ports`` (8080);
* ``AIP_PREDICT_ROUTE`` - ``POST`` route of predictions: body ``{"instances": [...]}``, answer
  ``{"predictions": [...]}``;
* ``AIP_HEALTH_ROUTE`` - ``GET`` route of health checks: 200 once the model is loaded and warmed up;
* ``AIP_STORAGE_URI`` - where Vertex copied the model's ``artifactUri``: the SavedModel directory
  (``saved_model.pb`` at its top), or a model base path (``1/``, ``2/``...). A ``gs://`` URI is
  downloaded with google-cloud-storage to a local directory first; a local path is used as is;
* ``AIP_DEPLOYED_MODEL_ID``, ``AIP_ENDPOINT_ID``, ``AIP_PROJECT_NUMBER`` - reported in the log.

Any problem (``AIP_STORAGE_URI`` unset, unreadable, holding no ``saved_model.pb``, a port that is
not a number) is one :class:`~base.layout.LayoutError` line: ``taxifare serve`` prints it and
exits non-zero, and Vertex shows it in the deployment's logs.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Mapping

from base import layout
from base.layout import LayoutError

#: Vertex AI's defaults when a variable is missing (its documented defaults).
DEFAULT_PORT = 8080
MODE_PREDICTION = "PREDICTION"


@dataclasses.dataclass
class AipSettings:
    """What Vertex AI asks of the serving container."""

    port: int
    predict_route: str
    health_route: str
    storage_uri: str
    deployed_model_id: str = ""
    endpoint_id: str = ""


def under_vertex(env: Mapping[str, str]) -> bool:
    """Whether the process runs as a Vertex AI serving container (``AIP_MODE`` or ``AIP_HTTP_PORT`` set)."""
    return bool(env.get("AIP_MODE") or env.get("AIP_HTTP_PORT"))


def settings(env: Mapping[str, str]) -> AipSettings:
    """The serving settings from Vertex AI's variables.

    Raises:
        LayoutError: for a missing ``AIP_STORAGE_URI`` or a bad port or route.
    """
    mode = env.get("AIP_MODE", MODE_PREDICTION)
    if mode != MODE_PREDICTION:
        raise LayoutError(f"AIP_MODE is {mode!r}: taxifare serve runs only as a prediction container (AIP_MODE=PREDICTION)")
    port_text = env.get("AIP_HTTP_PORT") or str(DEFAULT_PORT)
    if not port_text.isdigit() or not 0 < int(port_text) <= 65535:
        raise LayoutError(f"AIP_HTTP_PORT {port_text!r} is not a port number: set containerSpec.ports to one port, e.g. 8080")
    endpoint = env.get("AIP_ENDPOINT_ID", "ENDPOINT")
    deployed = env.get("AIP_DEPLOYED_MODEL_ID", "DEPLOYED_MODEL")
    default_route = f"/v1/endpoints/{endpoint}/deployedModels/{deployed}"
    predict_route = env.get("AIP_PREDICT_ROUTE") or f"{default_route}:predict"
    health_route = env.get("AIP_HEALTH_ROUTE") or default_route
    for name, route in (("AIP_PREDICT_ROUTE", predict_route), ("AIP_HEALTH_ROUTE", health_route)):
        if not route.startswith("/"):
            raise LayoutError(f"{name} {route!r} must be a path starting with '/' (e.g. /predict)")
    storage_uri = env.get("AIP_STORAGE_URI", "").strip()
    if not storage_uri:
        raise LayoutError(
            "AIP_STORAGE_URI is not set: upload the model with an artifact URI (the SavedModel's directory) "
            "so that Vertex AI copies it and sets AIP_STORAGE_URI"
        )
    return AipSettings(
        port=int(port_text),
        predict_route=predict_route,
        health_route=health_route,
        storage_uri=storage_uri,
        deployed_model_id=env.get("AIP_DEPLOYED_MODEL_ID", ""),
        endpoint_id=env.get("AIP_ENDPOINT_ID", ""),
    )


def download(uri: str, dest: str) -> None:
    """Copy every object under the ``gs://`` prefix ``uri`` into the directory ``dest``.

    Raises:
        LayoutError: when the bucket cannot be read or the prefix holds no object.
    """
    from base.storage import gcs_client, split_gcs

    bucket, prefix = split_gcs(uri)
    prefix = prefix.rstrip("/") + "/" if prefix else ""
    count = 0
    try:
        client = gcs_client()
        for blob in client.list_blobs(bucket, prefix=prefix):
            relative = blob.name[len(prefix) :]
            if not relative or relative.endswith("/"):
                continue
            target = os.path.normpath(os.path.join(dest, relative))
            if not target.startswith(os.path.normpath(dest) + os.sep):
                continue  # an object name with '..' in it: never write outside dest
            os.makedirs(os.path.dirname(target), exist_ok=True)
            blob.download_to_filename(target)
            count += 1
    except LayoutError:
        raise
    except Exception as exc:  # google.api_core / google.auth / requests errors: one line, not a traceback
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise LayoutError(f"AIP_STORAGE_URI {uri} cannot be read ({type(exc).__name__}: {first[:300]})") from None
    if count == 0:
        raise LayoutError(f"AIP_STORAGE_URI {uri} holds no object: point the model's artifact URI at the SavedModel's directory")


def model_base_path(storage_uri: str, workdir: str | None = None) -> str:
    """A local model base path serving what ``storage_uri`` holds (downloaded when ``gs://``).

    A SavedModel directory becomes version 1 of a base path under ``workdir`` (a temporary
    directory by default); a directory of versions is served as it is.

    Raises:
        LayoutError: when the location is unreadable or holds no ``saved_model.pb``.
    """
    workdir = workdir or tempfile.mkdtemp(prefix="taxifare-aip-")
    if storage_uri.startswith("gs://"):
        local = os.path.join(workdir, "download")
        os.makedirs(local, exist_ok=True)
        download(storage_uri, local)
    else:
        local = os.path.abspath(storage_uri)
        if not os.path.isdir(local):
            raise LayoutError(f"AIP_STORAGE_URI {storage_uri} is not a readable directory: point it at the SavedModel's directory")
        if not os.access(local, os.R_OK | os.X_OK):
            raise LayoutError(f"AIP_STORAGE_URI {storage_uri} is not readable by this process (uid {os.getuid()})")
    if layout.is_complete(local):
        base = os.path.join(workdir, "model")
        os.makedirs(base, exist_ok=True)
        os.symlink(local, os.path.join(base, "1"))
        return base
    if layout.list_versions(local):
        return local
    raise LayoutError(
        f"AIP_STORAGE_URI {storage_uri} holds no saved_model.pb (neither at its top nor in numbered versions): "
        "upload the model with the SavedModel's directory as its artifact URI"
    )
