"""Code shape: no module of the five packages over 450 lines, no function over 80 (issue 9's bar).

A long module or function usually does several jobs; split it into ones whose names say what
they do. Known exceptions are listed below with the reason, and must shrink, never grow: the
test also fails when a listed exception no longer exceeds the bar (then remove it from the list).
"""

import ast

import pytest
from conftest import ROOT

PACKAGES = ("base", "trainer", "components", "pipeline", "serving")
MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 80
#: Modules and functions still over the bar, each being split by another piece of work.
KNOWN_LONG_MODULES: set[str] = set()
KNOWN_LONG_FUNCTIONS: set[str] = set()


def modules():
    for package in PACKAGES:
        yield from sorted((ROOT / package).rglob("*.py"))


def long_functions(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            length = node.end_lineno - first + 1
            if length > MAX_FUNCTION_LINES:
                yield node.name, length


def test_module_sizes():
    too_long = {}
    for path in modules():
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > MAX_MODULE_LINES:
            too_long[str(path.relative_to(ROOT))] = lines
    assert set(too_long) - KNOWN_LONG_MODULES == set(), f"modules over {MAX_MODULE_LINES} lines: {too_long}"
    assert KNOWN_LONG_MODULES - set(too_long) == set(), "these are no longer too long: remove them from KNOWN_LONG_MODULES"


def test_function_sizes():
    too_long = {}
    for path in modules():
        for name, length in long_functions(path):
            too_long[f"{path.relative_to(ROOT)}::{name}"] = length
    assert set(too_long) - KNOWN_LONG_FUNCTIONS == set(), f"functions over {MAX_FUNCTION_LINES} lines: {too_long}"
    assert KNOWN_LONG_FUNCTIONS - set(too_long) == set(), "these are no longer too long: remove them from KNOWN_LONG_FUNCTIONS"


@pytest.mark.parametrize("source", ["def f():\n" + "    x = 1\n" * 90])
def test_the_measure_sees_a_long_function(tmp_path, source):
    path = tmp_path / "m.py"
    path.write_text(source)
    assert list(long_functions(path)) == [("f", 91)]


#: The layers, lowest first: a module imports only from its own layer and those below it.
LAYERS = ("base", "trainer", "serving", "components", "pipeline")
#: Imports of a higher layer still there (inside the function that needs them), each waiting for
#: its move; like the lists above, this must shrink, never grow.
KNOWN_UPWARD_IMPORTS = {
    # `taxifare monitor --retrain` spells `taxifare run`'s flags from the parameter table.
    "serving/monitor.py": ["pipeline"],
}


def imported_packages(path):
    """The first-party packages a module imports (at any depth: also imports inside functions)."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module.split(".")[0]
        elif isinstance(node, ast.Import):
            yield from (alias.name.split(".")[0] for alias in node.names)


def test_no_module_imports_a_higher_layer():
    upward = {}
    for path in modules():
        layer = LAYERS.index(path.relative_to(ROOT).parts[0])
        higher = sorted({p for p in imported_packages(path) if p in LAYERS and LAYERS.index(p) > layer})
        if higher:
            upward[str(path.relative_to(ROOT))] = higher
    assert upward == KNOWN_UPWARD_IMPORTS, f"imports of a higher layer ({' -> '.join(LAYERS)}): {upward}"


def test_the_layer_check_sees_an_upward_import(tmp_path):
    path = tmp_path / "m.py"
    path.write_text("def f():\n    from components.check_drift import logic\n")
    assert list(imported_packages(path)) == ["components"]


#: Private names (a leading underscore) that the five packages may still use across a module's
#: border, each with why there is no public way. Like the lists above, this must shrink, never grow.
ALLOWED_PRIVATE = {
    # The documented way to leave a child process at once (no atexit, no flushing): public despite its name.
    "os._exit",
    # The type of what ArgumentParser.add_subparsers() returns, for annotations: argparse names it nowhere else.
    "argparse._SubParsersAction",
    # TensorFlow's Session offers its fast callable (DirectSession::MakeCallable) only under this name
    # (serving/servable.py::session_callable: 230 us a call against 590 us through make_callable);
    # the code falls back to the public make_callable should a release drop it.
    "session._make_callable_from_options",
}


#: A named tuple's documented methods and fields: public, with an underscore so as not to clash with field names.
NAMED_TUPLE_API = {"_asdict", "_fields", "_replace", "_make", "_field_defaults"}


def private(name):
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_uses(path):
    """``(line, what)`` for each private name a module takes from elsewhere.

    * ``from pkg.mod import _name`` (or a private module) from a first-party package;
    * ``x._name`` on anything but ``self``/``cls`` (another module's ``storage._client()``,
      a library object's ``job._gca_resource``);
    * ``getattr(x, "_name")``, the same reached by a string.
    """
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.split(".")[0] in LAYERS:
            for alias in node.names:
                if private(alias.name) or any(private(part) for part in node.module.split(".")):
                    yield node.lineno, f"{node.module}.{alias.name}"
        elif isinstance(node, ast.Attribute) and private(node.attr) and node.attr not in NAMED_TUPLE_API:
            if not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                yield node.lineno, ast.unparse(node)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("getattr", "setattr", "hasattr"):
            name = node.args[1].value if len(node.args) > 1 and isinstance(node.args[1], ast.Constant) else None
            if isinstance(name, str) and private(name):
                yield node.lineno, f"{ast.unparse(node.args[0])}.{name}"


def test_no_module_uses_another_modules_private_names():
    found = {}
    for path in modules():
        for line, what in private_uses(path):
            found.setdefault(what, []).append(f"{path.relative_to(ROOT)}:{line}")
    used = {what: where for what, where in found.items() if what not in ALLOWED_PRIVATE}
    assert not used, f"private names used from outside their module (make them public, or list them with the reason): {used}"
    assert ALLOWED_PRIVATE - set(found) == set(), "these are no longer used: remove them from ALLOWED_PRIVATE"


def test_the_private_check_sees_imports_calls_and_attributes(tmp_path):
    path = tmp_path / "m.py"
    path.write_text(
        "from base.storage import _client\n"
        "from base import storage\n"
        "def f(job):\n"
        "    storage._client()\n"
        "    public = job.name, job.config._asdict()\n"
        "    return job._gca_resource, getattr(job, '_parent')\n"
    )
    assert sorted(private_uses(path)) == [
        (1, "base.storage._client"),
        (4, "storage._client"),
        (6, "job._gca_resource"),
        (6, "job._parent"),
    ]


#: What a step's logic module imports at module level, never inside a function: it costs nothing to
#: start (the standard library, base/, the records steps hand each other). Heavy libraries
#: (TensorFlow, numpy, scikit-learn, the Google clouds) and the modules that import them stay inside
#: the functions that need them, so a step that does not use them does not pay for them.
LIGHT_PROJECT_MODULES = ("base", "components.contracts", "trainer.schema")


def light_imports_inside_functions(path):
    import sys

    tree = ast.parse(path.read_text(encoding="utf-8"))
    for fn in ast.walk(tree):
        if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
            for stmt in fn.body:
                if isinstance(stmt, ast.ImportFrom) and stmt.level == 0 and stmt.module:
                    mods = [stmt.module]
                elif isinstance(stmt, ast.Import):
                    mods = [alias.name for alias in stmt.names]
                else:
                    continue
                for mod in mods:
                    light = mod.split(".")[0] in sys.stdlib_module_names or any(
                        mod == p or mod.startswith(p + ".") for p in LIGHT_PROJECT_MODULES
                    )
                    if light:
                        yield f"{fn.name}: {mod}"


def test_step_logic_imports_light_modules_at_module_level():
    # component.py bodies are copied into the compiled spec alone, so they import inside (kfp's rule)
    found = {
        str(path.relative_to(ROOT)): sorted(light_imports_inside_functions(path))
        for path in sorted((ROOT / "components").rglob("*.py"))
        if path.name != "component.py"
    }
    assert {k: v for k, v in found.items() if v} == {}


def test_the_light_import_check_sees_one(tmp_path):
    path = tmp_path / "m.py"
    path.write_text("def f():\n    import json\n    from base import atomic\n    import numpy\n")
    assert list(light_imports_inside_functions(path)) == ["f: json", "f: base"]


def module_name(path):
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(paths):
    """Module -> the modules of ours it imports anywhere (at the top, inside functions, for type checking only)."""
    names = {module_name(p): p for p in paths}
    graph = {}
    for name, path in names.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module)
                found.update(f"{node.module}.{alias.name}" for alias in node.names)  # `from pkg import module`
        graph[name] = {m for m in found if m in names and m != name}
    return graph


def cycles(graph):
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_modules_import_each_other_in_a_circle():
    # a circle hides which module is the lower room; even imports inside functions count
    assert cycles(import_graph(list(modules()))) == []


def test_the_circle_check_sees_one(tmp_path):
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
