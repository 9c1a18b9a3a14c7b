"""The house's floor plan, checked: layers, no import cycles, lean service processes.

Every first-party import is read from the source (module level and inside functions alike) and
each module is placed on a floor by the longest matching prefix in ``FLOORS``. A module may
import its own floor and the floors ``MAY_IMPORT`` lists; a service imports only its own package
and the core. ARCHITECTURE in the README draws the same plan.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("cascade", "gateway", "fallback_mf", "two_tower", "loadtests", "events")

# Longest prefix wins.
FLOORS = {
    # core: what every process may load (stdlib, numpy, pydantic, telemetry; no pandas, no torch)
    "cascade.runtime": "core",
    "two_tower.contract": "core",
    "two_tower.similar_contract": "core",
    "fallback_mf.schemas": "core",
    "fallback_mf.similar_schemas": "core",
    "fallback_mf.artifact_format": "core",
    "gateway.schemas": "core",
    "events.contract": "core",
    "events.log": "core",
    # services: the deployable processes
    "gateway": "service:gateway",
    "fallback_mf.service": "service:mf",
    "fallback_mf.__main__": "service:mf",
    "events": "service:events",
    # offline libraries: data, features, evaluation figures, reference recommenders
    "cascade.data": "offline",
    "cascade.features": "offline",
    "cascade.recommenders": "offline",
    "cascade.evaluation": "offline",
    # models: training, artifacts, export
    "fallback_mf": "models",
    "two_tower": "models",
    # tooling: CLI, stack, evaluation registry, benchmarks, drills, load tests
    "cascade": "tooling",
    "cascade.evaluation.models": "tooling",
    "cascade.evaluation.cli": "tooling",
    "loadtests": "tooling",
}
MAY_IMPORT = {
    "core": {"core"},
    "service:gateway": {"core"},
    "service:mf": {"core"},
    "service:events": {"core"},
    "offline": {"core"},
    "models": {"core", "offline"},
    "tooling": {"core", "offline", "models", "service:gateway", "service:mf", "service:events"},
}


def floor(module: str) -> str:
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        prefix = ".".join(parts[:n])
        if prefix in FLOORS:
            return FLOORS[prefix]
    raise KeyError(module)


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            rel = path.relative_to(ROOT).with_suffix("")
            parts = list(rel.parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def imports_of(path: Path, module: str, known: set[str]) -> set[str]:
    """First-party modules ``module`` imports (resolved to the longest known module name)."""
    out = set()
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            names = [f"{base}.{a.name}" for a in node.names]
            if any(n not in known for n in names):  # an attribute of ``base``, not a submodule
                names.append(base)
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != module and name.split(".")[0] in PACKAGES:
                out.add(name)
    return out


def graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {m: imports_of(p, m, known) for m, p in found.items()}


def test_every_module_is_on_a_floor() -> None:
    for module in modules():
        floor(module)


def test_no_import_from_a_lower_floor_into_a_higher_one() -> None:
    wrong = []
    for module, imported in graph().items():
        mine = floor(module)
        for other in imported:
            theirs = floor(other)
            if theirs != mine and theirs not in MAY_IMPORT[mine]:
                wrong.append(f"{module} ({mine}) imports {other} ({theirs})")
    assert not wrong, "\n".join(sorted(wrong))


def test_no_import_cycles() -> None:
    edges = graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for v in list(edges):
        if v not in index:
            visit(v)
    assert not cycles, cycles


@pytest.mark.parametrize("entry", ["gateway.main", "fallback_mf.service.main"])
def test_services_load_neither_pandas_nor_torch(entry: str) -> None:
    code = (
        f"import sys, {entry}; print(','.join(m for m in ('pandas', 'torch') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert out.stdout.strip() == "", f"{entry} loads {out.stdout.strip()}"
