"""A cache of compiled graphs, so that repeated ``lint``/``show``/``compile`` skip parsing and validation.

An entry is keyed by the plan path as given, the working directory, the time scale and a
fingerprint of this tool's own source files (so that a new version or an edit never reads a stale
graph). It records the SHA-256 of every file the compilation read (the plan and its ``extends``
chain): a lookup that finds any of them changed, missing or unreadable is a miss. Only plans that
compiled without errors are stored. Entries are written to a temporary file and renamed into place.

Location: ``$DITSR_PLAN_CACHE_DIR``, else ``$XDG_CACHE_HOME/ditsr-plan``, else ``~/.cache/ditsr-plan``.
``DITSR_PLAN_NO_CACHE=1`` turns it off. Any problem with the cache makes it a miss, never an error.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from functools import cache
from pathlib import Path

from .graph import ScheduleGraph

PACKAGE = Path(__file__).resolve().parent.parent


def enabled() -> bool:
    return os.environ.get("DITSR_PLAN_NO_CACHE", "") in ("", "0")


def cache_dir() -> Path:
    if os.environ.get("DITSR_PLAN_CACHE_DIR"):
        return Path(os.environ["DITSR_PLAN_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "ditsr-plan"


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


def load(path: str, time_scale: float) -> ScheduleGraph | None:
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
        return ScheduleGraph.from_json(entry["graph"], sources)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def store(path: str, time_scale: float, graph: ScheduleGraph) -> None:
    if not enabled():
        return
    entry = {"files": {f: _digest(t) for f, t in graph.sources.items()}, "graph": graph.to_json()}
    target = _entry_path(path, time_scale)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=".json")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(entry, fh)
        os.replace(tmp, target)
    except OSError:
        pass
