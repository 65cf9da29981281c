"""Parameters you can follow: one default each, one name from the pipeline's signature to the trainer.

The table (:class:`pipeline.parameters.Parameters`) declares each pipeline parameter's default,
:class:`trainer.config.TrainConfig` the trainer's (the lab CLI's). These tests fail when a second
default appears elsewhere (a component input with a default, a step function or a dataclass with
a default of its own, a literal passed where the parameter should be), when a step input fed by a
pipeline parameter has another name, or when the DAG body goes back to untyped look-ups.
"""

import ast
import dataclasses
import importlib
import pkgutil
from pathlib import Path

import pytest
import yaml
from conftest import ROOT
from kfp.components import BaseComponent

import components
from pipeline import parameters
from trainer.config import TrainConfig

#: The names whose defaults are declared once: the pipeline parameters and the trainer's settings.
NAMES = set(parameters.BY_NAME) | {f.name for f in dataclasses.fields(TrainConfig)}
#: Where those defaults are declared.
HOMES = {"pipeline/parameters.py", "trainer/config.py"}
PACKAGES = ("base", "trainer", "serving", "components", "pipeline")
#: Literals that look like a second default but are not one: (function or class, name) -> why (no paths: steps move).
NOT_DEFAULTS = {
    ("GateSettings", "min_improvement"): "GateSettings() is the gate switched off (direct calls)",
    ("GateSettings", "require_significant"): "the gate switched off",
    ("GateSettings", "min_slice_rows"): "the gate switched off",
    ("GateSettings", "allow_signature_change"): "the gate switched off",
    ("report_html", "max_drift"): "the page's threshold line (0 draws none), not the gate's setting",
    ("report_section", "max_drift"): "the page's threshold line (0 draws none), not the gate's setting",
    ("verify", "infra_validation"): "a direct call (tests, versions --score) serves nothing",
    ("verify", "require_beat_baseline"): "a direct call reports the baseline only",
    ("_fit_gbt", "seed"): "the baseline trees' own seed, not the pipeline's",
    ("bigquery_query", "datetime_layout"): "the course's query selects pickup_datetime",
    ("paired_bootstrap", "seed"): "the bootstrap's seed, not the pipeline's",
    ("compare", "seed"): "the bootstrap's seed, not the pipeline's",
    ("_describe", "max_bad_fraction"): "a staged split is re-read with no bad row allowed",
    ("describe", "seed"): "the statistics sample's seed, not the pipeline's",
}


def _modules() -> list[Path]:
    return [p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py")) if str(p.relative_to(ROOT)) not in HOMES]


def _given(value: ast.expr) -> bool:
    """A literal that fixes a value (None and "" mean "not given")."""
    if isinstance(value, ast.UnaryOp):
        value = value.operand
    return isinstance(value, ast.Constant) and value.value is not None and value.value != ""


def second_defaults(tree: ast.AST, path: str, allowed: dict[tuple[str, str], str] = NOT_DEFAULTS) -> list[str]:
    """``path:line owner name=literal`` for every literal default or argument of a name in :data:`NAMES` outside its home."""
    found = []

    def report(owner: str, name: str, value: ast.expr, line: int) -> None:
        if name in NAMES and (owner, name) not in allowed:
            found.append(f"{path}:{line} {owner} {name}={ast.unparse(value)}")

    def visit(node: ast.AST, owner: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                args = child.args
                positional = args.posonlyargs + args.args
                pairs = [
                    *zip(positional[len(positional) - len(args.defaults) :], args.defaults, strict=True),
                    *zip(args.kwonlyargs, args.kw_defaults, strict=True),
                ]
                for arg, default in pairs:
                    if default is not None and _given(default):
                        report(child.name, arg.arg, default, child.lineno)
                visit(child, child.name)
            elif isinstance(child, ast.ClassDef):
                for stmt in child.body:  # dataclass and NamedTuple fields
                    if (
                        isinstance(stmt, ast.AnnAssign)
                        and isinstance(stmt.target, ast.Name)
                        and stmt.value is not None
                        and _given(stmt.value)
                    ):
                        report(child.name, stmt.target.id, stmt.value, stmt.lineno)
                visit(child, child.name)
            else:
                if isinstance(child, ast.Call):
                    for keyword in child.keywords:  # batch_size=64: a value written where a setting should be passed
                        is_switch = isinstance(keyword.value, ast.Constant) and isinstance(keyword.value.value, bool)
                        if keyword.arg and _given(keyword.value) and not is_switch:
                            report(owner, keyword.arg, keyword.value, child.lineno)
                visit(child, owner)

    visit(tree, "<module>")
    return found


def test_every_default_is_declared_once():
    found = [hit for path in _modules() for hit in second_defaults(ast.parse(path.read_text()), str(path.relative_to(ROOT)))]
    assert not found, "a second default (declare it in pipeline/parameters.py or trainer/config.py, and pass it): " + "; ".join(found)
    every = [hit for path in _modules() for hit in second_defaults(ast.parse(path.read_text()), str(path.relative_to(ROOT)), {})]
    seen = {(hit.split(" ")[1], hit.split(" ")[2].split("=")[0]) for hit in every}
    assert not set(NOT_DEFAULTS) - seen, f"NOT_DEFAULTS lists what is no longer there: {sorted(set(NOT_DEFAULTS) - seen)}"


def test_the_scan_finds_a_second_default():
    """The scan is not blind: each way of writing a second default is caught."""
    source = """
import dataclasses
def smoke(train_steps: int = 10): ...
def train(*, batch_size=64): ...
@dataclasses.dataclass
class Settings:
    learning_rate: float = 0.003
def step():
    train(eval_steps=5, seed=None, source="")
"""
    found = second_defaults(ast.parse(source), "x.py")
    assert [hit.split(" ", 1)[1] for hit in found] == [
        "smoke train_steps=10",
        "train batch_size=64",
        "Settings learning_rate=0.003",
        "step eval_steps=5",
    ]


def _components() -> list[tuple[str, BaseComponent]]:
    out = []
    for info in pkgutil.walk_packages(components.__path__, "components."):
        module = importlib.import_module(info.name)
        out += [(f"{info.name}.{name}", value) for name, value in vars(module).items() if isinstance(value, BaseComponent)]
    return out


def test_no_component_input_has_a_default_of_its_own():
    found = _components()
    assert len(found) >= 15, [name for name, _ in found]
    for name, component in found:
        for input_name, spec in (component.component_spec.inputs or {}).items():
            if input_name in parameters.BY_NAME:
                assert spec.default is None and not spec.optional, f"{name}: input {input_name} has a default of its own"


@pytest.mark.parametrize("path", ["compiled/taxifare_pipeline.yaml", "compiled/taxifare_vertex.yaml"])
def test_a_step_input_fed_by_a_pipeline_parameter_has_its_name(path):
    """No renames on the way: ``train_steps`` is ``train_steps`` in every step that takes it."""
    with open(ROOT / path, encoding="utf-8") as fh:
        spec = yaml.safe_load(fh)
    own = {name.removeprefix("exec-") for name, ex in spec["deploymentSpec"]["executors"].items() if "from components." in str(ex)}
    dags = [spec["root"]["dag"], *(c["dag"] for c in spec["components"].values() if "dag" in c)]
    # On Vertex the served model's name is the Vertex model's display name (a parameter of its own).
    allowed = {("model_name", "model_display_name")}
    renamed = set()
    for dag in dags:
        for task in dag["tasks"].values():
            if task["componentRef"]["name"].removeprefix("comp-") not in own:
                continue
            for input_name, value in task.get("inputs", {}).get("parameters", {}).items():
                source = value.get("componentInputParameter", "").removeprefix("pipelinechannel--")
                if source in parameters.BY_NAME and source != input_name and (input_name, source) not in allowed:
                    renamed.add((task["taskInfo"]["name"], input_name, source))
    assert not renamed


def test_the_dag_body_is_typed():
    """No untyped look-ups: no ``Any`` and no dict of parameters in the DAG modules."""
    for name in ("pipeline/dag.py", "pipeline/pipeline.py", "pipeline/vertex_pipeline.py"):
        tree = ast.parse((ROOT / name).read_text())
        names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)} | {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
        assert "Any" not in names, name
        lookups = [ast.unparse(n) for n in ast.walk(tree) if isinstance(n, ast.Subscript) and ast.unparse(n.value) == "p"]
        assert not lookups, (name, lookups)


def test_a_trainer_setting_in_the_table_takes_the_trainers_default():
    """A pipeline parameter that is also a TrainConfig field takes the trainer's default by its constant, not a second literal."""
    tree = ast.parse((ROOT / "pipeline/parameters.py").read_text())
    table = next(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == "Parameters")
    trainer = {f.name for f in dataclasses.fields(TrainConfig)}
    own = {"seed": "the pipeline's runs are seeded (42); the lab CLI's are random unless --seed"}
    rows = {s.target.id: s.value for s in table.body if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)}
    shared = sorted(name for name in rows if name in trainer)
    assert {"train_steps", "batch_size", "hidden_units", "learning_rate"} <= set(shared)
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    for name in shared:
        if name in own:
            continue
        default = rows[name].args[0]  # type: ignore[union-attr]
        assert not isinstance(default, ast.Constant), f"{name}'s default {ast.unparse(default)} is a second literal: use trainer/config.py"
        value = parameters.BY_NAME[name].default
        assert value == defaults[name] or parameters.checks.hidden_units(name, value) == defaults[name], name
