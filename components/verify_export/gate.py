"""The deploy decision: the serving contract, and better beyond noise on every slice that matters.

Two questions decide whether a candidate may replace the model a route serves (the
*champion*):

1. **The contract.** A served model's ``serving_default`` signature (input names, dtypes and
   shapes; output names and dtypes) is a contract with its callers. :func:`read_signature`
   reads it from ``saved_model.pb``; :func:`contract_changes` says how a candidate's differs
   ("adds input pickup_datetime"). A version with another signature is not broken, it is
   another contract: it replaces the champion only with ``allow_signature_change``, and is
   recorded as such.
2. **Better beyond noise.** Both models predict the same test rows
   (:func:`components.verify_export.slices.compare`); :func:`decide` applies :class:`GateSettings`: the
   candidate's RMSE must be lower by at least ``min_improvement`` dollars, with
   ``require_significant`` the paired bootstrap's 95% interval of the difference must lie below
   zero, and no slice with at least ``min_slice_rows`` trips may get worse by more than
   ``max_slice_regression`` (a fraction of the champion's RMSE on that slice). TFX's Evaluator
   gates the same way (value and change thresholds, overall and per slice, against the last
   blessed model).

The settings' defaults are the pipeline's (:mod:`pipeline.parameters`); why they are what
they are is in docs/pipeline.md.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence
from typing import Any

from components.verify_export.slices import SliceResult

#: What a signature looks like here: ``{"inputs": {name: {"dtype": "float32", "shape": [-1]}}, "outputs": {...}}``.
Signature = dict[str, dict[str, dict[str, Any]]]
SIGNATURE_NAME = "serving_default"
#: How a verdict names a signature change, for the step line and the deploy record.
INCOMPATIBLE = "incompatible signature"
FIXES = "deploy it under a new --model-name, or pass --allow-signature-change to replace the served contract"


@dataclasses.dataclass(frozen=True)
class GateSettings:
    """The thresholds of the deploy decision (pipeline parameters of the same names)."""

    min_improvement: float = 0.0
    require_significant: bool = False
    max_slice_regression: float = math.inf
    min_slice_rows: int = 0
    allow_signature_change: bool = False

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> GateSettings:
        """Read back ``vars(settings)`` as artifact metadata carried it (JSON: no infinity, integers as floats)."""
        limit = values.get("max_slice_regression")
        return cls(
            min_improvement=float(values.get("min_improvement", 0.0)),
            require_significant=bool(values.get("require_significant", False)),
            max_slice_regression=math.inf if limit is None else float(limit),
            min_slice_rows=int(values.get("min_slice_rows", 0)),
            allow_signature_change=bool(values.get("allow_signature_change", False)),
        )

    def describe(self) -> str:
        """The settings as one line (for the report)."""
        parts = [f"min_improvement ${self.min_improvement:g}", f"require_significant {self.require_significant}"]
        if math.isfinite(self.max_slice_regression):
            parts.append(f"max_slice_regression {self.max_slice_regression:.0%} on slices of at least {self.min_slice_rows} trips")
        return ", ".join(parts)


def read_signature(model_dir: str, name: str = SIGNATURE_NAME) -> Signature:
    """The ``name`` signature of the SavedModel in ``model_dir``, read from ``saved_model.pb`` (TensorFlow's protos, not TensorFlow).

    Raises:
        ValueError: when the file cannot be read or has no such signature.
    """
    from trainer import protos

    saved_model_pb2 = protos.load("tensorflow.core.protobuf.saved_model_pb2")
    proto = saved_model_pb2.SavedModel()
    try:
        with open(os.path.join(model_dir, "saved_model.pb"), "rb") as fh:
            proto.ParseFromString(fh.read())
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read saved_model.pb ({type(exc).__name__}: {exc})") from None
    for graph in proto.meta_graphs:
        if name in graph.signature_def:
            sig = graph.signature_def[name]
            return {
                "inputs": {key: _tensor_info(info) for key, info in sorted(sig.inputs.items())},
                "outputs": {key: _tensor_info(info) for key, info in sorted(sig.outputs.items())},
            }
    raise ValueError(f"no {name} signature")


def _tensor_info(info: Any) -> dict[str, Any]:
    from trainer.protos import dtype_name

    shape = None if info.tensor_shape.unknown_rank else [int(d.size) for d in info.tensor_shape.dim]
    return {"dtype": dtype_name(info.dtype), "shape": shape}


def recorded_signature(record: dict[str, Any]) -> Signature | None:
    """The signature a deploy record kept (``None`` for versions deployed before records had one)."""
    value = record.get("signature")
    if isinstance(value, dict) and isinstance(value.get("inputs"), dict) and isinstance(value.get("outputs"), dict):
        return value
    return None


def _shape(shape: Any) -> str:
    if shape is None:
        return "unknown"
    return "(" + ", ".join("None" if d < 0 else str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def contract_changes(served: Signature, candidate: Signature) -> list[str]:
    """How ``candidate`` differs from ``served``: ``["adds input pickup_datetime", ...]`` (empty: the same contract)."""
    out: list[str] = []
    for side in ("inputs", "outputs"):
        kind = side[:-1]
        old, new = served.get(side, {}), candidate.get(side, {})
        out += [f"adds {kind} {name}" for name in sorted(set(new) - set(old))]
        out += [f"drops {kind} {name}" for name in sorted(set(old) - set(new))]
        for name in sorted(set(old) & set(new)):
            if old[name].get("dtype") != new[name].get("dtype"):
                out.append(f"{kind} {name} is {new[name].get('dtype')}, was {old[name].get('dtype')}")
            elif old[name].get("shape") != new[name].get("shape"):
                out.append(f"{kind} {name} has shape {_shape(new[name].get('shape'))}, was {_shape(old[name].get('shape'))}")
    return out


def contract_verdict(changes: Sequence[str], champion: str, allowed: bool) -> tuple[bool, str]:
    """``(ok, detail)`` of the contract check against ``champion`` (e.g. "version 4, served by the default route")."""
    if not changes:
        return True, f"same inputs and outputs as {champion}"
    what = "; ".join(changes)
    if allowed:
        return True, f"{what} ({champion}): allowed by allow_signature_change, recorded with the version"
    return False, f"{INCOMPATIBLE}: {what} ({champion}): {FIXES}"


@dataclasses.dataclass
class Decision:
    """The gate's answer: whether the candidate beats the champion, and why (one line)."""

    ok: bool
    reason: str
    #: What blocked, one phrase each ("airport trips worse by 14% (n=412)").
    blocked: list[str] = dataclasses.field(default_factory=list)


def _money(value: float) -> str:
    return f"-${-value:.3f}" if value < 0 else f"+${value:.3f}"


def decide(results: Sequence[SliceResult], settings: GateSettings, champion: str) -> Decision:
    """Apply ``settings`` to :func:`components.verify_export.slices.compare`'s results (overall first)."""
    overall = results[0]
    if overall.champion is None:
        return Decision(True, f"no champion to compare with ({champion})")
    gain = -overall.difference
    lo, hi = overall.interval or (math.nan, math.nan)
    head = (
        f"${overall.candidate.rmse:.3f} vs {champion}'s ${overall.champion.rmse:.3f} on the same {overall.count:,} rows "
        f"(difference {_money(overall.difference)}, 95% interval {_money(lo)} to {_money(hi)})"
    )
    blocked = []
    if not gain > 0 or gain < settings.min_improvement:
        need = f"at least ${settings.min_improvement:g}" if settings.min_improvement > 0 else "a lower RMSE"
        blocked.append(f"improvement ${gain:.3f} is not {need}" if gain > 0 else "not better overall")
    elif settings.require_significant and not hi < 0:
        blocked.append("the improvement is within the noise of the test rows (the interval reaches zero)")
    for res in results[1:]:
        if res.champion is None or res.count < max(settings.min_slice_rows, 1):
            continue
        change = res.relative_change
        if math.isfinite(change) and change > settings.max_slice_regression:
            blocked.append(f"{res.name} worse by {change:.0%} (n={res.count:,})")
    if blocked:
        return Decision(False, f"{'; '.join(blocked)}: {head}", blocked)
    return Decision(True, head)


def worst_slices(results: Sequence[SliceResult], min_rows: int, limit: int = 3) -> list[SliceResult]:
    """The slices (with at least ``min_rows`` trips and a champion) where the candidate loses most, worst first."""
    rows = [r for r in results[1:] if r.champion is not None and r.count >= max(min_rows, 1) and math.isfinite(r.relative_change)]
    return sorted(rows, key=lambda r: r.relative_change, reverse=True)[:limit]
