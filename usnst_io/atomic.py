"""Writing a file so that it is whole or absent: a temporary name beside it, then one rename. Every writer in usnst
goes through here (media, DICOM, checkpoints, artifacts), so a killed run never leaves half a file where a good one
was, and a later run can tell a dead run's leftovers from a live one's by the process id in the name."""
from __future__ import annotations

import os
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

TEMP_MARK = ".usnst-tmp"  # in the names of files being written (.NAME.usnst-tmpPID.SUFFIX); listings skip them
_TEMP_NAME = re.compile(r"^\..+" + re.escape(TEMP_MARK) + r"(\d+)")


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write to; on success it replaces ``path`` in one rename, on error
    it is removed. The temp name holds this process's id (``.NAME.tmpPID<suffix>``), so a run can tell a killed
    run's leftovers from a live one's (``remove_stale_temp_files``); ``suffix`` defaults to the file's own, for
    writers that pick a format by suffix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}{TEMP_MARK}{os.getpid()}{path.suffix if suffix is None else suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def remove_stale_temp_files(folder: str | os.PathLike) -> int:
    """Temp files left by a killed run (its PID is in the name) are removed; a live process's are left alone."""
    removed = 0
    for tmp in Path(folder).rglob(f".*{TEMP_MARK}*"):
        match = _TEMP_NAME.match(tmp.name)
        if match is None or not tmp.is_file():
            continue
        try:
            os.kill(int(match.group(1)), 0)
        except ProcessLookupError:
            tmp.unlink(missing_ok=True)
            removed += 1
        except (OverflowError, PermissionError):
            pass
    return removed


def is_temp(path: Path) -> bool:
    """A file an atomic write is still writing (or a killed one left): ``.NAME.usnst-tmpPID…``."""
    return _TEMP_NAME.match(path.name) is not None
