from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PLANS = ROOT / "plans"


@pytest.fixture
def write_plan(tmp_path):
    """Write plan text to a file in a temporary folder and return its path."""

    def write(text: str, name: str = "p.plan") -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    return write


@pytest.fixture(autouse=True)
def _run_from_root(monkeypatch):
    # plans/ paths in tests and messages are relative to the repository root
    monkeypatch.chdir(ROOT)


@pytest.fixture(autouse=True)
def _private_compile_cache(tmp_path_factory, monkeypatch):
    # every test starts with an empty compile cache of its own, never the user's
    monkeypatch.setenv("DITSR_PLAN_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


SLOW_FUZZ_EXAMPLES = "50000"  # per hypothesis test with --slow (CI's default: 3400)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--slow",
        action="store_true",
        help=f"the long fuzzing run: {SLOW_FUZZ_EXAMPLES} hypothesis examples per test instead of CI's 3400",
    )


def pytest_configure(config: pytest.Config) -> None:
    # before the test modules are imported, so that test_hypothesis reads it
    if config.getoption("--slow"):
        import os

        os.environ.setdefault("DITSR_PLAN_FUZZ_EXAMPLES", SLOW_FUZZ_EXAMPLES)
