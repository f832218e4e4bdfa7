"""Atomic file writes: nothing half-written ever stands at a final path.

Every writer in the engine goes through these helpers: write to a temporary file in the
same folder, flush and fsync, then `os.replace` onto the final name. A crash or a full
disk leaves the old file (or nothing) at the final path, never a truncated one.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

TMP_MARK = ".partial-"  # in every temporary name, so leftovers of a killed run are ours to remove


def remove_partials(folder: str | os.PathLike[str]) -> list[Path]:
    """Delete the temporary files a killed writer left in `folder` (only ours)."""
    removed = []
    for tmp in Path(folder).glob(f".*{TMP_MARK}*"):
        if tmp.is_file():
            tmp.unlink()
            removed.append(tmp)
    return removed


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike[str], suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `final`; on success it is renamed onto `final`.

    The temporary name keeps the final suffix (encoders pick the container from it)
    unless `suffix` is given. On any exception the temporary file is removed and the
    exception propagates; `final` is untouched.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{final.stem}{TMP_MARK}", suffix=suffix or final.suffix, dir=final.parent
    )
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; final files get the usual mode
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes(final: str | os.PathLike[str], data: bytes) -> Path:
    with atomic_path(final) as tmp:
        tmp.write_bytes(data)
    return Path(final)


def write_text(final: str | os.PathLike[str], text: str) -> Path:
    return write_bytes(final, text.encode("utf-8"))


def write_json(final: str | os.PathLike[str], obj: Any) -> Path:
    return write_text(final, json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")


def read_json(path: str | os.PathLike[str]) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))
