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


LONG_FUZZ_EXAMPLES = "50000"  # per hypothesis test with --long-fuzz (CI's default: 3400)

# The fast tier for the inner loop is `python -m pytest -m "not slow"`: it leaves out the tests below, each of
# which trains a whole run, spawns several processes or fuzzes for a long time (durations measured on the
# 2-core machine: see docs/reliability.md). The full suite, `python -m pytest`, is what CI runs.
SLOW_TESTS = (
    "tests/cli/test_demo.py",  # the demo, 1200 steps
    "tests/cli/test_upscale_demo.py",  # the demo at 1/20 of its steps, then upscaling with it
    "tests/cli/test_upscale.py",  # a finished run, its export, a PixArt pipeline (the fast tier has
    # tests/runtime/upscale/test_pipeline.py)
    "tests/cli/test_first_hour.py",  # resumes, forced resumes, loading errors: each a run in a subprocess
    "tests/cli/test_hypothesis.py",  # 11,000 fuzzed plans
    "tests/cli/test_careless_input.py",
    "tests/runtime/analysis/test_matrix_compare.py",  # three runs of the notes' matrix
    "tests/runtime/run/test_kills.py",  # SIGKILL at five points, then resumes
    "tests/runtime/run/test_ddp.py",  # two processes per test
    "tests/runtime/run/test_faults.py",
    "tests/runtime/run/test_hostile_run.py",  # real Ctrl-Cs in subprocesses
    "tests/runtime/run/test_hostile_checkpoints.py",
    "tests/runtime/run/test_run_folder_fuzz.py",  # 1,000 mutated run folders
    "tests/runtime/train/test_pretrained.py",
    "tests/runtime/train/test_pyramid_adapter.py",  # tiny PixArts with the pyramid, a run; one at XL shape on meta
    "tests/runtime/train/test_dropped_conditioning.py::test_dropout",  # a trainer of a tiny PixArt each
    "tests/runtime/train/test_pth_checkpoint.py",  # tiny PixArts written and read as original checkpoints
    "tests/runtime/train/test_speed_paths.py",
    "tests/runtime/train/test_train_sets.py",  # tiny PixArt trainers, 40 s
    "tests/cli/test_show_params.py",  # PixArt-XL/2 built on the meta device, twice
    "tests/runtime/train/test_reference_plan.py",  # the reference plans on a tiny PixArt, every term live
    # single tests of 10-22 s each on 2 idle cores (the fast tier took 5 min with them, 3.5 without)
    "tests/runtime/validate/test_evaluator.py::test_run_with_eval_writes_metrics_grids_and_strips",
    "tests/runtime/analysis/test_report.py::test_the_run_writes_a_self_contained_report_with_every_section",
    "tests/runtime/run/test_run.py::test_resume_is_bitwise_identical_to_an_uninterrupted_run",
    "tests/runtime/run/test_run.py::test_accumulation_and_data_workers_give_the_same_run",
    "tests/runtime/run/test_run.py::test_an_existing_run_folder_is_never_overwritten_silently",
    "tests/runtime/run/test_run.py::test_resume_refuses_another_plan_unless_forced",
    "tests/runtime/validate/test_packs.py::test_a_run_validates_on_its_pack_and_evaluate_scores_it_offline",
    "tests/runtime/validate/test_packs_layout.py::test_a_run_and_evaluate_record_which_input_they_used",
    "tests/runtime/run/test_watch_keep.py::test_a_run_stops_on_a_watch_and_keeps_its_best_checkpoints",
    # the tests that read the console of one tiny run (14 s at load 8)
    "tests/runtime/run/test_run_console.py::test_the_first_lines_come_before_torch_then_a_word_per_stage",
    "tests/runtime/run/test_run_console.py::test_a_slow_accumulated_step_counts_its_micro_batches",
    "tests/runtime/run/test_run_console.py::test_the_header_says_the_watch_rules_are_scaled",
)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--long-fuzz",
        action="store_true",
        help=f"the long fuzzing run: {LONG_FUZZ_EXAMPLES} hypothesis examples per test instead of CI's 3400",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: left out of the fast tier (`pytest -m 'not slow'`)")
    # before the test modules are imported, so that test_hypothesis reads it
    if config.getoption("--long-fuzz"):
        import os

        os.environ.setdefault("DITSR_PLAN_FUZZ_EXAMPLES", LONG_FUZZ_EXAMPLES)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.nodeid.startswith(SLOW_TESTS):
            item.add_marker(pytest.mark.slow)
