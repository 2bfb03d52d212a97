"""The type-checking configuration CI runs (`mypy`, pyproject's [tool.mypy]) stays what issue 20 asked for:
the settings, the plan language and the compiler checked strictly, the runtime with mypy's defaults, and no
module exempt. (CI runs mypy itself; this test fails fast when the configuration is loosened.)"""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STRICT_PACKAGES = ("ditsr_plan.settings", "ditsr_plan.dsl", "ditsr_plan.compiler")
# the per-module flags that mypy's `strict = true` turns on (strict itself is a global option only)
STRICT_FLAGS = (
    "warn_unused_ignores",
    "warn_return_any",
    "disallow_any_generics",
    "disallow_subclassing_any",
    "disallow_untyped_calls",
    "disallow_untyped_defs",
    "disallow_incomplete_defs",
    "check_untyped_defs",
    "disallow_untyped_decorators",
    "no_implicit_reexport",
    "strict_equality",
    "extra_checks",
)
LOOSENING = ("ignore_errors", "follow_imports", "disable_error_code", "allow_untyped_defs", "allow_any_generics")


def _mypy() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["mypy"]


def _modules(override: dict) -> list[str]:
    module = override["module"]
    return [module] if isinstance(module, str) else list(module)


def test_the_whole_package_is_checked() -> None:
    config = _mypy()
    assert config.get("packages") == ["ditsr_plan"]
    assert "pydantic.mypy" in config.get("plugins", [])
    assert not config.get("ignore_errors", False)
    assert "exclude" not in config


def test_no_module_is_exempt() -> None:
    for override in _mypy().get("overrides", []):
        loosened = [key for key in LOOSENING if key in override and override[key] not in (False, [])]
        assert not loosened, f"{_modules(override)}: {loosened} -- fix the type errors instead"
        for key, value in override.items():
            if key != "module":
                assert value is True, f"{_modules(override)}: {key} = {value!r} loosens the check"


def test_settings_dsl_and_compiler_are_strict() -> None:
    for package in STRICT_PACKAGES:
        covering = [o for o in _mypy().get("overrides", []) if f"{package}.*" in _modules(o)]
        assert covering, f"no [[tool.mypy.overrides]] covers {package}.*"
        flags = {key for o in covering for key, value in o.items() if value is True}
        missing = [flag for flag in STRICT_FLAGS if flag not in flags]
        assert not missing, f"{package} is not checked strictly: {missing} off"
