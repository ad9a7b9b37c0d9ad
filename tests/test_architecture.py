"""The house: every import points down the data flow, no import cycles, small modules, no import-time
side effects (DEVELOPERS.md, "Layers")."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "deeprun"
MAX_LINES = 500

#: Bottom to top: a module may import from its own layer and the layers below, never from above.
LAYERS = (
    (
        "deeprun.registry",
        "deeprun.exit_codes",
        "deeprun.files",
        "deeprun.monitor",
        "deeprun.memory",
        "deeprun.plugins",
        "deeprun.version",
    ),
    ("deeprun.techniques",),
    ("deeprun.data",),
    ("deeprun.models", "deeprun.loggers"),
    ("deeprun.settings",),
    ("deeprun.training",),
    ("deeprun.runs",),
    ("deeprun.reports",),
    ("deeprun.sweeps",),
    ("deeprun.commands", "deeprun.api"),
    ("hydra_plugins",),
)
#: The package itself is the facade over the API (``deeprun.train`` …), above the layers it re-exports;
#: its modules stay in their own layers.
FACADE = "deeprun"


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(SRC.rglob("*.py"))}


def layer(module: str) -> int:
    """The layer of ``module``: the longest matching prefix in :data:`LAYERS` (the facade: the top)."""
    if module == FACADE:
        return len(LAYERS)
    best, best_length = None, -1
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_length:
                best, best_length = index, len(prefix)
    assert best is not None, f"{module} is in no layer: add it to LAYERS"
    return best


def imported(path: Path, known: set[str]) -> set[str]:
    """The project modules ``path`` imports, at module level or inside functions."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            candidates = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        else:
            continue
        for name in candidates:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name:
                names.add(name)
                break
    return names


def import_graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {name: imported(path, known) - {name} for name, path in found.items()}


def test_every_import_points_down_the_layers():
    upward = [
        f"{module} (layer {layer(module)}) imports {target} (layer {layer(target)})"
        for module, targets in import_graph().items()
        for target in sorted(targets)
        if layer(target) > layer(module)
    ]
    assert not upward, "\n".join(upward)


def test_no_import_cycles():
    graph = import_graph()
    # A package's __init__ re-exporting its modules is not a cycle with them.
    graph = {module: {t for t in targets if not module.startswith(t + ".")} for module, targets in graph.items()}
    state: dict[str, int] = {}
    cycles = []

    def visit(module: str, stack: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                cycles.append(" -> ".join([*stack[stack.index(target) :], target]))
            elif target not in state:
                visit(target, [*stack, target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, "\n".join(cycles)


def test_modules_stay_small():
    large = {name: n for name, path in modules().items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not large, large


@pytest.mark.parametrize(
    "group", ["initializer", "activation", "normalization", "regularizer", "optimizer", "schedule"]
)
def test_each_technique_group_has_its_module(group):
    conf = PACKAGE / "conf" / group
    module = {
        "activation": "activations",
        "initializer": "initializers",
        "regularizer": "regularizers",
        "optimizer": "optimizers",
        "schedule": "schedules",
        "normalization": "normalization",
    }[group]
    assert conf.is_dir() and (PACKAGE / "techniques" / f"{module}.py").is_file()


def test_training_knows_nothing_of_hydra_files_or_the_console():
    forbidden = ("hydra", "omegaconf", "rich", "deeprun.files", "deeprun.runs", "orbax")
    offenders = []
    for path in sorted((PACKAGE / "training").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module]
                if isinstance(node, ast.ImportFrom) and node.module
                else []
            )
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in forbidden or n in forbidden]
    assert not offenders, offenders


def test_only_commands_know_hydras_job_context():
    offenders = [
        str(path.relative_to(SRC))
        for path in sorted(PACKAGE.rglob("*.py"))
        if "HydraConfig" in path.read_text() and path.parent.name != "commands"
    ]
    assert not offenders, offenders


IMPORT_EVERYTHING = """
import matplotlib, pkgutil, importlib, signal, warnings
matplotlib.use("svg")  # a notebook's (or any user's) backend
before = (list(warnings.filters), signal.getsignal(signal.SIGINT))
import deeprun
for info in pkgutil.walk_packages(deeprun.__path__, "deeprun."):
    importlib.import_module(info.name)
from omegaconf import OmegaConf
assert matplotlib.get_backend() == "svg", matplotlib.get_backend()
assert (list(warnings.filters), signal.getsignal(signal.SIGINT)) == before, "warning filters or SIGINT changed"
assert not any(OmegaConf.has_resolver(name) for name in ("deeprun.threads_per_job", "deeprun.gpu_memory_fraction"))
print("ok")
"""


def test_importing_any_module_changes_nothing_in_the_process():
    result = subprocess.run([sys.executable, "-c", IMPORT_EVERYTHING], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-3000:]
