"""The package's shape (docs/architecture.md): data flows one way, the runtime's rooms keep to their jobs,
no function is longer than a screen."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "ditsr_plan"
MAX_FUNCTION_LINES = 80


def _modules(root: Path = ROOT) -> dict[str, tuple[Path, ast.Module]]:
    out = {}
    for path in root.rglob("*.py"):
        name = ".".join(path.relative_to(root.parent).with_suffix("").parts).removesuffix(".__init__")
        out[name] = (path, ast.parse(path.read_text()))
    return out


def _imports(name: str, path: Path, tree: ast.Module, top: str = "ditsr_plan") -> set[str]:
    """Every module of the package ``top`` that ``name`` imports, at any depth of the file (lazy imports
    included)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith(top)}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            if base.startswith(top):
                found.add(base)
                found |= {f"{base}.{a.name}" for a in node.names}
    return found


def _holds_code(tree: ast.Module) -> bool:
    """An ``__init__.py`` that does more than re-export (a docstring, imports, ``__all__``) holds code: an
    import of it runs that code, so a loop through it is a real import cycle."""
    for node in tree.body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            continue
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            continue
        if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["__all__"]:
            continue
        return True
    return False


def import_cycle(modules: dict[str, tuple[Path, ast.Module]], top: str = "ditsr_plan") -> list[str] | None:
    """The first import cycle between ``modules`` (as the chain of names), or None. An import of a package
    whose ``__init__`` only re-exports its modules is not a loop through them; one whose ``__init__`` holds
    code is."""
    imports = {name: _imports(name, *pt, top=top) for name, pt in modules.items()}
    graph = {
        m: {
            d
            for d in deps
            if d in modules and d != m and (modules[d][0].name != "__init__.py" or _holds_code(modules[d][1]))
        }
        for m, deps in imports.items()
    }
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> list[str] | None:
        state[m] = 1
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                return [*path, m, d]
            if d not in state and (found := visit(d, [*path, m])):
                return found
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m, [])):
            return found
    return None


MODULES = _modules()
IMPORTS = {name: _imports(name, *pt) for name, pt in MODULES.items()}


def _importing(prefix: str, target: str) -> list[str]:
    return sorted(m for m, deps in IMPORTS.items() if m.startswith(prefix) and any(d.startswith(target) for d in deps))


def test_phases_import_only_earlier_phases():
    assert _importing("ditsr_plan.dsl", "ditsr_plan.compiler") == []
    assert _importing("ditsr_plan.dsl", "ditsr_plan.runtime") == []
    assert _importing("ditsr_plan.compiler", "ditsr_plan.runtime") == []
    assert _importing("ditsr_plan.runtime", "ditsr_plan.dsl") == []  # the runtime sees the compiled graph only


def test_the_settings_are_the_shared_vocabulary():
    # dsl, compiler and runtime all import ditsr_plan.settings; it imports none of them (and no torch, no lark)
    assert _importing("ditsr_plan.settings", "ditsr_plan.dsl") == []
    assert _importing("ditsr_plan.settings", "ditsr_plan.compiler") == []
    assert _importing("ditsr_plan.settings", "ditsr_plan.runtime") == []
    assert _importing("ditsr_plan.settings", "ditsr_plan.cli") == []
    code = (
        "import sys; import ditsr_plan.settings.schemas, ditsr_plan.settings.numbers; "
        "assert not {'torch', 'lark'} & set(sys.modules), 'torch or lark imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_runtimes_rooms_keep_to_their_jobs():
    assert _importing("ditsr_plan.runtime.analysis", "ditsr_plan.runtime.train") == []
    assert _importing("ditsr_plan.runtime.analysis", "ditsr_plan.runtime.run") == []
    assert _importing("ditsr_plan.runtime.train", "ditsr_plan.runtime.run") == []
    assert _importing("ditsr_plan.runtime.train", "ditsr_plan.runtime.validate") == []
    assert _importing("ditsr_plan.runtime.validate", "ditsr_plan.runtime.run") == []


def test_no_import_cycles_between_modules():
    cycle = import_cycle(MODULES)
    assert cycle is None, " -> ".join(cycle)


def test_a_cycle_through_an_init_that_holds_code_is_found(tmp_path):
    # the shape of a real cycle that once passed: lora -> generators/__init__ -> pretrained -> lora
    pkg = tmp_path / "pkg"
    (pkg / "generators").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "lora.py").write_text("from .generators import build\n")
    (pkg / "generators" / "__init__.py").write_text("from .pretrained import load\n\ndef build():\n    return load\n")
    (pkg / "generators" / "pretrained.py").write_text("from .. import lora\n\ndef load():\n    return lora\n")
    cycle = import_cycle(_modules(pkg), top="pkg")
    assert cycle is not None and "pkg.generators" in cycle and "pkg.lora" in cycle, cycle
    # an __init__ that only re-exports is no loop through its modules
    (pkg / "generators" / "__init__.py").write_text('"""Generators."""\n\nfrom .pretrained import load\n')
    (pkg / "lora.py").write_text("from .generators import pretrained\n")
    (pkg / "generators" / "pretrained.py").write_text("def load():\n    return 1\n")
    assert import_cycle(_modules(pkg), top="pkg") is None


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


# A plan setting read by its name as a string: a renamed field would be a KeyError at run time, not a type error.
STRING_KEY_READS = (
    re.compile(r"settings\s*\[\s*[\"']"),  # settings["lr"]
    re.compile(r"settings\.get\("),  # settings.get("lr")
    re.compile(r"\bs\[\s*[\"']"),  # s["lr"], s the settings
    re.compile(r"\.values\b(?!\s*\()"),  # block.values (the JSON dump), but not dict.values()
    re.compile(r"\bblocks\s*\[[^\]]*\]\s*\.(settings|values)"),  # graph.blocks["run"].settings: graph.block("run")
    re.compile(r"getattr\(\s*[\w.]*settings\s*,\s*[\"']"),  # getattr(settings, "lr")
)


def test_the_runtime_reads_settings_as_attributes():
    samples = (
        's = settings["lr"]',
        'settings.get("lr")',
        "s['d_collapse']",
        "dict(block.values)",
        'graph.blocks["ema"].settings',
        'getattr(self.settings, "lr")',
    )
    assert all(pattern.search(sample) for pattern, sample in zip(STRING_KEY_READS, samples, strict=True))
    assert not any(pattern.search("for k, v in d.values(): graph.blocks['data'].kind") for pattern in STRING_KEY_READS)
    found = [
        f"{path.relative_to(ROOT.parent)}:{number}: {line.strip()}"
        for name, (path, _) in MODULES.items()
        if name.startswith("ditsr_plan.runtime")
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if any(pattern.search(line) for pattern in STRING_KEY_READS)
    ]
    assert found == [], "read the schema's attribute (graph.block('ema').decay), not a string key"
