"""A cache of compiled graphs, so that repeated ``lint``/``show``/``compile`` skip parsing and validation.

An entry is keyed by the plan path as given, the working directory, the time scale and a
fingerprint of this tool's own source files (so that a new version or an edit never reads a stale
graph). It records the SHA-256 of every file the compilation read (the plan and its ``extends``
chain): a lookup that finds any of them changed, missing or unreadable is a miss. Only plans that
compiled without errors are stored. Entries are written to a temporary file and renamed into place.

An entry also keeps ``lint``'s findings, one list per rule choice (``--select``, ``--ignore``,
``--param``): a cached ``lint`` reads them back as they are, and imports neither the graph, the setting
schemas and pydantic, nor the rules, nor the parser (lark).

Location: the user's cache folder (:func:`ditsr_plan.user_cache.cache_dir`: ``$DITSR_PLAN_CACHE_DIR``, else
``$XDG_CACHE_HOME/ditsr-plan``, else ``~/.cache/ditsr-plan``). ``DITSR_PLAN_NO_CACHE=1`` turns it off (not the
grammar's parse tables kept beside it, which depend on this tool's source alone: ``dsl/grammar_table.py``).
Any problem with the cache makes it a miss, never an error.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ditsr_plan.diagnostics import Diagnostic, Note, Pos
from ditsr_plan.user_cache import cache_dir

__all__ = ["cache_dir", "enabled", "lint_key", "load", "load_findings", "store", "store_findings", "tool_fingerprint"]

if TYPE_CHECKING:
    from .graph import ScheduleGraph

PACKAGE = Path(__file__).resolve().parent.parent


def enabled() -> bool:
    return os.environ.get("DITSR_PLAN_NO_CACHE", "") in ("", "0")


@cache
def tool_fingerprint() -> str:
    """Changes whenever any source file of ditsr_plan changes (version bumps and local edits alike)."""
    h = hashlib.sha256()
    for root, dirs, files in os.walk(PACKAGE):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(files):
            if name.endswith((".py", ".lark")):
                st = os.stat(os.path.join(root, name))
                h.update(
                    f"{os.path.relpath(os.path.join(root, name), PACKAGE)}:{st.st_size}:{st.st_mtime_ns}\n".encode()
                )
    return h.hexdigest()


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _entry_path(path: str, time_scale: float) -> Path:
    key = json.dumps([tool_fingerprint(), os.getcwd(), path, repr(time_scale)])
    return cache_dir() / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.json"


def _fresh(path: str, time_scale: float) -> tuple[dict[str, Any], dict[str, str]] | None:
    """The entry for ``path`` and the texts of the files it read, when none of them changed."""
    if not enabled():
        return None
    try:
        entry = json.loads(_entry_path(path, time_scale).read_text(encoding="utf-8"))
        sources = {}
        for file, digest in entry["files"].items():
            text = Path(file).read_bytes().decode("utf-8").replace("\r\n", "\n").lstrip("\ufeff")
            if _digest(text) != digest:
                return None
            sources[file] = text
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return (entry, sources) if isinstance(entry, dict) else None


def load(path: str, time_scale: float) -> ScheduleGraph | None:
    from .graph import ScheduleGraph

    fresh = _fresh(path, time_scale)
    if fresh is None:
        return None
    try:
        return ScheduleGraph.from_json(fresh[0]["graph"], fresh[1])
    except (ValueError, KeyError, TypeError):
        return None


def store(path: str, time_scale: float, graph: ScheduleGraph) -> None:
    if not enabled():
        return
    _write(path, time_scale, {"files": {f: _digest(t) for f, t in graph.sources.items()}, "graph": graph.to_json()})


def lint_key(select: Sequence[str] | None, ignore: Sequence[str] | None, params: Mapping[str, Any]) -> str:
    """The rule choice a list of findings was made with (as given: another spelling is only a miss)."""
    return json.dumps([list(select or ()), list(ignore or ()), params], sort_keys=True)


def load_findings(path: str, time_scale: float, key: str) -> tuple[list[Diagnostic], dict[str, str]] | None:
    """The findings ``lint`` made with the rule choice ``key`` on the unchanged plan at ``path``, and the
    texts of its files; None on a miss."""
    fresh = _fresh(path, time_scale)
    if fresh is None:
        return None
    try:
        found = fresh[0]["lint"][key]
        return [_undiagnostic(d) for d in found], fresh[1]
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def store_findings(
    path: str, time_scale: float, key: str, findings: Sequence[Diagnostic], sources: Mapping[str, str]
) -> None:
    """Add ``lint``'s findings to the entry of ``path``, if it is the entry of these very files."""
    fresh = _fresh(path, time_scale)
    if fresh is None or fresh[1] != dict(sources):
        return
    entry = fresh[0]
    lint = entry.get("lint")
    entry["lint"] = {**(lint if isinstance(lint, dict) else {}), key: [_diagnostic(d) for d in findings]}
    _write(path, time_scale, entry)


def _pos(pos: Pos | None) -> list[Any] | None:
    return [pos.file, pos.line, pos.col, pos.length] if pos else None


def _unpos(raw: list[Any] | None) -> Pos | None:
    if not raw:
        return None
    file, line, col, length = raw
    if not isinstance(file, str) or not all(type(n) is int for n in (line, col, length)):
        raise ValueError("not a position")
    return Pos(file, line, col, length)


def _text(value: Any, optional: bool = False) -> Any:
    if not isinstance(value, str) and not (optional and value is None):
        raise ValueError("not a text")
    return value


def _diagnostic(d: Diagnostic) -> dict[str, Any]:
    notes = [[n.message, _pos(n.pos)] for n in d.notes]
    return {
        "code": d.code,
        "message": d.message,
        "pos": _pos(d.pos),
        "hint": d.hint,
        "notes": notes,
        "severity": d.severity,
    }


def _undiagnostic(data: dict[str, Any]) -> Diagnostic:
    notes = tuple(Note(_text(message), _unpos(pos)) for message, pos in data["notes"])
    return Diagnostic(
        _text(data["code"]),
        _text(data["message"]),
        _unpos(data["pos"]),
        _text(data["hint"], optional=True),
        notes,
        _text(data["severity"]),
    )


def _write(path: str, time_scale: float, entry: dict[str, Any]) -> None:
    import tempfile  # here: it imports random and hashlib's friends, which a cache hit does not need

    target = _entry_path(path, time_scale)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=".json")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(entry, fh)
        os.replace(tmp, target)
    except OSError:
        pass
