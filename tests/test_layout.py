"""The package's shape (docs/architecture.md): data flows one way, the runtime's rooms keep to their jobs,
no function is longer than a screen."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "ditsr_plan"
MAX_FUNCTION_LINES = 80


def _modules() -> dict[str, tuple[Path, ast.Module]]:
    out = {}
    for path in ROOT.rglob("*.py"):
        name = ".".join(path.relative_to(ROOT.parent).with_suffix("").parts).removesuffix(".__init__")
        out[name] = (path, ast.parse(path.read_text()))
    return out


def _imports(name: str, path: Path, tree: ast.Module) -> set[str]:
    """Every ditsr_plan module ``name`` imports, at any depth of the file (lazy imports included)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("ditsr_plan")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            if base.startswith("ditsr_plan"):
                found.add(base)
                found |= {f"{base}.{a.name}" for a in node.names}
    return found


MODULES = _modules()
IMPORTS = {name: _imports(name, *pt) for name, pt in MODULES.items()}


def _importing(prefix: str, target: str) -> list[str]:
    return sorted(m for m, deps in IMPORTS.items() if m.startswith(prefix) and any(d.startswith(target) for d in deps))


def test_phases_import_only_earlier_phases():
    assert _importing("ditsr_plan.dsl", "ditsr_plan.compiler") == []
    assert _importing("ditsr_plan.dsl", "ditsr_plan.runtime") == []
    assert _importing("ditsr_plan.compiler", "ditsr_plan.runtime") == []
    assert _importing("ditsr_plan.runtime", "ditsr_plan.dsl") == []  # the runtime sees the compiled graph only


def test_the_runtimes_rooms_keep_to_their_jobs():
    assert _importing("ditsr_plan.runtime.analysis", "ditsr_plan.runtime.train") == []
    assert _importing("ditsr_plan.runtime.analysis", "ditsr_plan.runtime.run") == []
    assert _importing("ditsr_plan.runtime.train", "ditsr_plan.runtime.run") == []
    assert _importing("ditsr_plan.runtime.train", "ditsr_plan.runtime.validate") == []
    assert _importing("ditsr_plan.runtime.validate", "ditsr_plan.runtime.run") == []


def test_no_import_cycles_between_modules():
    known = set(MODULES)
    # a package's __init__ re-exports its modules; an import of the package is not a loop through them
    graph = {
        m: {d for d in deps if d in known and d != m and MODULES[d][0].name != "__init__.py"}
        for m, deps in IMPORTS.items()
    }
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for d in graph[m]:
            assert state.get(d) != 1, " -> ".join([*path, m, d])
            if d not in state:
                visit(d, [*path, m])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [])


def test_no_function_is_longer_than_a_screen():
    long = [
        f"{path.relative_to(ROOT.parent)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for path, tree in MODULES.values()
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert long == []


def test_the_analysis_room_and_the_plan_commands_import_no_torch():
    code = (
        "import sys; import ditsr_plan.runtime.analysis.report, ditsr_plan.runtime.analysis.compare, "
        "ditsr_plan.runtime.records, ditsr_plan.cli; assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
