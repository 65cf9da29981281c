"""What the REST and gRPC front ends share: the model's manager, limits and answers."""

from __future__ import annotations

import dataclasses
from typing import Any

from serving.manager import ModelManager
from serving.payload import Limits


@dataclasses.dataclass
class App:
    """The served model and the server's settings."""

    manager: ModelManager
    limits: Limits
    log_requests: bool = True
    #: Vertex AI's (predict, health) routes of a custom serving container (see :mod:`serving.aip`).
    vertex_routes: tuple[str, str] | None = None
    #: The request log (``taxifare serve --request-log``), ``None`` when off.
    request_log: Any = None

    def log_prediction(self, api: str, servable: Any, label: str | None, columns: Any, outputs: Any) -> None:
        """Hand an answered predict request to the request log, when there is one (queued only: no I/O here)."""
        if self.request_log is not None:
            self.request_log.record(api, servable, label, columns, outputs)

    @property
    def model_name(self) -> str:
        """The name clients use."""
        return self.manager.model_name

    def metadata(self, version: int | None, label: str | None = None) -> dict[str, Any]:
        """TF Serving's REST metadata answer (plus the export's ``metrics.json``)."""
        from google.protobuf import json_format

        servable = self.manager.get(version, label)
        sig_map = json_format.MessageToDict(
            servable.signature_def_map(), preserving_proto_field_name=True, always_print_fields_with_no_presence=True
        )
        return {
            "model_spec": {"name": self.model_name, "signature_name": "", "version": str(servable.version)},
            "metadata": {"signature_def": sig_map, "metrics": servable.metrics},
        }

    def vertex_model_fields(self, version: int, project: str | None, location: str | None) -> dict[str, str]:
        """The fields Vertex AI adds to a prediction answer."""
        return {
            "deployedModelId": str(version),
            "model": f"projects/{project or 'local'}/locations/{location or 'local'}/models/{self.model_name}",
            "modelDisplayName": self.model_name,
            "modelVersionId": str(version),
        }

    def vertex_endpoint(self, project: str | None, location: str | None, endpoint: str) -> dict[str, Any]:
        """A minimal Vertex ``Endpoint`` resource (what ``aiplatform.Endpoint(...)`` reads)."""
        prefix = f"projects/{project or 'local'}/locations/{location or 'local'}"
        version = self.manager.current_version
        deployed = []
        if version is not None:
            fields = self.vertex_model_fields(version, project, location)
            deployed.append(
                {"id": fields["deployedModelId"], "model": fields["model"], "displayName": self.model_name, "modelVersionId": str(version)}
            )
        return {"name": f"{prefix}/endpoints/{endpoint}", "displayName": self.model_name, "deployedModels": deployed}
