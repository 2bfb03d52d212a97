"""The user's cache folder, and the private files kept in it.

Location: ``$DITSR_PLAN_CACHE_DIR``, else ``$XDG_CACHE_HOME/ditsr-plan``, else ``~/.cache/ditsr-plan``. It
holds the compile cache (``compiler/cache.py``), the plan grammar's parse tables (``dsl/grammar_table.py``)
and the file lists of data folders.

A file that is read back as more than plain data (the parse tables are a pickle) is read only through
:func:`read_private`: a regular file, not a link, owned by this user and writable by nobody else -- what
:func:`write_private` leaves (written to a temporary file of mode 0600 and renamed into place, so a reader
never sees half a file).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path


def cache_dir() -> Path:
    if os.environ.get("DITSR_PLAN_CACHE_DIR"):
        return Path(os.environ["DITSR_PLAN_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "ditsr-plan"


def read_private(path: Path) -> bytes | None:
    """The bytes of ``path`` when it is a regular file (not a link) of this user that neither the group nor
    others may write to; None when it is missing, unreadable, or not such a file."""
    if not hasattr(os, "getuid"):
        return None  # no owner to check (Windows): never read
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as fh:
        try:
            st = os.fstat(fd)  # of the file opened, not of whatever the name points at by now
            if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
                return None
            return fh.read()
        except OSError:
            return None


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` readable and writable by this user only, atomically; a failure (a read-only
    or full disk) leaves things as they were and is not an error."""
    import tempfile  # here: a reader does not need it

    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")  # mode 0600
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError:
        pass
