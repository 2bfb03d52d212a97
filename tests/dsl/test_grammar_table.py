"""The grammar's parse tables in the user's cache folder: kept private, read back only when they are this
user's own tables of this grammar, never able to run code; anything else is ignored and written again."""

from __future__ import annotations

import os
import pickle
import stat

import pytest

from ditsr_plan.dsl import grammar_table
from ditsr_plan.dsl.grammar_table import MAGIC, plan_parser, table_key, table_path
from ditsr_plan.user_cache import cache_dir, read_private

STATEMENT = "stage main 0..: v 1; lpips 0->0.5 cosine over 5k after 4.5k"
PLANTED: list[str] = []


def _planted(note: str) -> None:
    PLANTED.append(note)


class _Payload:
    """Unpickled, it would call :func:`_planted`: a stand-in for a planted file's code."""

    def __reduce__(self):
        return (_planted, ("ran",))


@pytest.fixture
def fresh():
    """plan_parser() as a new process sees it; the path and key of this grammar's tables."""
    plan_parser.cache_clear()
    PLANTED.clear()
    key = table_key(grammar_table.GRAMMAR.read_text())
    yield table_path(key), key
    plan_parser.cache_clear()


def _built(monkeypatch) -> list[int]:
    """Counts the parsers built from the grammar (not read from the cache)."""
    builds: list[int] = []
    real = grammar_table.Lark

    class Counting(real):  # type: ignore[misc, valid-type]
        def __init__(self, *args, **kwargs):
            builds.append(1)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(grammar_table, "Lark", Counting)
    return builds


def _tables_written(path, key) -> None:
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_private(path).startswith(MAGIC + key.encode() + b"\n")


def test_tables_are_built_once_kept_private_and_read_back(fresh, monkeypatch):
    path, key = fresh
    builds = _built(monkeypatch)
    first = plan_parser().parse(STATEMENT)
    assert builds == [1] and path.parent == cache_dir()
    _tables_written(path, key)
    plan_parser.cache_clear()
    assert plan_parser().parse(STATEMENT) == first  # the next process reads the tables back
    assert builds == [1]
    assert not list(path.parent.glob(".tmp-*"))


def _plant(path, data: bytes, mode: int = 0o600) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.chmod(path, mode)


@pytest.mark.parametrize(
    "case",
    ["corrupt", "cut short", "another grammar's key", "no header", "a class in the pickle", "writable by others"],
)
def test_a_bad_or_foreign_table_file_is_ignored_and_written_again(fresh, monkeypatch, case):
    path, key = fresh
    plan_parser()  # the real tables, to spoil
    good = read_private(path)
    plan_parser.cache_clear()
    header = MAGIC + key.encode() + b"\n"
    planted = {
        "corrupt": header + b"\x80\x05not a pickle",
        "cut short": good[: len(good) // 2],
        "another grammar's key": MAGIC + b"0" * 64 + b"\n" + good.partition(b"\n")[2],
        "no header": good.partition(b"\n")[2],
        "a class in the pickle": header + pickle.dumps(_Payload()),
        "writable by others": good,
    }[case]
    _plant(path, planted, 0o666 if case == "writable by others" else 0o600)
    builds = _built(monkeypatch)
    assert plan_parser().parse(STATEMENT).data == "stage_stmt"
    assert builds == [1]  # ignored, built from the grammar
    assert PLANTED == []  # and nothing in it ran
    _tables_written(path, key)


def test_a_link_in_place_of_the_tables_is_not_followed(fresh, monkeypatch, tmp_path):
    path, key = fresh
    plan_parser()
    elsewhere = tmp_path / "elsewhere.pickle"
    elsewhere.write_bytes(read_private(path))
    os.chmod(elsewhere, 0o600)
    path.unlink()
    path.symlink_to(elsewhere)
    plan_parser.cache_clear()
    builds = _built(monkeypatch)
    plan_parser()
    assert builds == [1]
    assert not path.is_symlink()  # replaced by a file of its own
    _tables_written(path, key)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="giving a file away needs root")
def test_tables_owned_by_another_user_are_not_read(fresh, monkeypatch):
    path, _ = fresh
    plan_parser()
    os.chown(path, 12345, 12345)
    assert read_private(path) is None
    plan_parser.cache_clear()
    builds = _built(monkeypatch)
    plan_parser()
    assert builds == [1]
    assert path.stat().st_uid == os.getuid()


def test_an_unwritable_cache_folder_is_not_an_error(fresh, monkeypatch, tmp_path):
    blocker = tmp_path / "a file"
    blocker.write_text("")
    monkeypatch.setenv("DITSR_PLAN_CACHE_DIR", str(blocker / "cache"))  # a folder under a file: mkdir fails
    plan_parser.cache_clear()
    assert plan_parser().parse(STATEMENT).data == "stage_stmt"


def test_the_key_follows_the_grammar_and_lark(monkeypatch):
    grammar = grammar_table.GRAMMAR.read_text()
    key = table_key(grammar)
    assert table_key(grammar + "\n// a comment\n") != key
    monkeypatch.setattr(grammar_table, "LARK_VERSION", "0.0.0")
    assert table_key(grammar) != key
