"""Atomic file writes: nothing half-written ever stands at a final path.

Every writer in the engine goes through these helpers: write to a temporary file in the
same folder, flush and fsync, then `os.replace` onto the final name. A crash or a full
disk leaves the old file (or nothing) at the final path, never a truncated one.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import json
import os
import re
import tempfile
import unicodedata
import weakref
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
    """A JSON file's value; ValueError (never RecursionError) for one that does not read."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except RecursionError:
        raise ValueError("nested too deeply to read") from None


# ---------------------------------------------------------------------------------------
# Naming files in messages


_PARTIAL_NAME = re.compile(rf"\.(?P<stem>.*?){re.escape(TMP_MARK)}[^/]*?(?P<suffix>\.[^./]*)?$")


def final_name(path: str | os.PathLike[str]) -> str:
    """The file a user knows for `path`: a temporary `.seg-001.partial-x8k.mp4` is reported as
    the `seg-001.mp4` it was about to become (its folder kept), any other path as it is."""
    path = Path(path)
    m = _PARTIAL_NAME.fullmatch(path.name)
    if m is None:
        return str(path)
    return str(path.with_name(m["stem"] + (m["suffix"] or "")))


def describe_os_error(exc: OSError) -> str:
    """One line for a failed read or write: what went wrong and on which file, the way the
    user names it (`No space left on device (run/segments/seg-003.mp4)`)."""
    what = exc.strerror or str(exc) or type(exc).__name__
    return f"{what} ({final_name(exc.filename)})" if exc.filename else what


# ---------------------------------------------------------------------------------------
# One writer per folder


class FolderClaim:
    """An exclusive claim on an output folder for one run's life.

    It is `fcntl.flock` on the folder itself, not an exclusive-create lock file: the kernel
    drops the lock when the process ends, however it ends (SIGKILL, out of memory), so a
    killed run never leaves a stale lock that would block `--resume`, and nothing extra is
    written into the folder. The claim goes with `release()`, or when the object is garbage
    (the run that held it is over). A folder the claim created is removed again if nothing
    was put in it, so a run refused after its claim leaves no trace.
    """

    def __init__(self, path: Path, fd: int | None, created: bool) -> None:
        self.path = path
        self._release = weakref.finalize(self, _unlock, fd, path, created)

    def release(self) -> None:
        self._release()


_HELD: weakref.WeakValueDictionary[tuple[int, int], FolderClaim] = (
    weakref.WeakValueDictionary()
)  # claims this process holds, by folder identity


def claim_folder(path: str | os.PathLike[str]) -> FolderClaim | None:
    """Create `path` (and its parents) if needed and claim it; None while another process,
    or another run in this one, holds it. Where `fcntl` is missing (Windows) every claim
    succeeds: one writer per folder is then up to the user."""
    path = Path(path)
    created = not path.exists()
    path.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        return FolderClaim(path, None, False)
    for _ in range(3):  # the folder was removed and made again between open and lock: again
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        st = os.fstat(fd)
        key = (st.st_dev, st.st_ino)
        if not _try_lock(fd, fcntl, key):
            os.close(fd)
            return None
        with contextlib.suppress(FileNotFoundError):
            now = os.stat(path)
            if (now.st_dev, now.st_ino) == key:
                claim = FolderClaim(path, fd, created)
                _HELD[key] = claim
                return claim
        os.close(fd)
    return None


def folder_busy(path: str | os.PathLike[str]) -> bool:
    """Whether a run holds `path` right now (a check that writes nothing: for dry runs)."""
    path = Path(path)
    if not path.is_dir():
        return False
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        return False
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        st = os.fstat(fd)
        if not _try_lock(fd, fcntl, (st.st_dev, st.st_ino)):
            return True
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def _try_lock(fd: int, fcntl: Any, key: tuple[int, int]) -> bool:
    """Lock `fd` without waiting. A claim of this process that is only waiting to be
    collected (its run is over, a traceback kept it alive) is collected first. A file system
    that has no locks (some network mounts) claims nothing, as on Windows."""
    for attempt in range(2):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                return True  # no locks here: one writer per folder is up to the user
            if attempt or key not in _HELD:
                return False
            gc.collect()
    return False


def _unlock(fd: int | None, path: Path, created: bool) -> None:
    if created:  # before the lock goes, so no other run can have claimed it meanwhile
        with contextlib.suppress(OSError):
            path.rmdir()  # only when empty
    if fd is not None:
        os.close(fd)


def check_writable_folder(path: str | os.PathLike[str], field: str = "out") -> Path:
    """Refuse (one line naming `field`) a folder that cannot be written: a file, a path
    through a file, or a place without write access. Writes nothing."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{field}: {str(path)!r} is a file; give a folder")
    parent = path
    while not parent.exists():
        if parent.parent == parent:
            break
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"{field}: {str(parent)!r} is a file, so {str(path)!r} cannot be made")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(
            f"{field}: cannot write in {str(parent)!r} (no permission, or a read-only file "
            "system); choose another folder"
        )
    return path


_WINDOWS_RESERVED = {"con", "prn", "aux", "nul"} | {
    f"{p}{i}" for p in ("com", "lpt") for i in range(1, 10)
}


def slug(text: str, max_len: int = 40) -> str:
    """ASCII lowercase words joined by '-': safe on every filesystem, never empty.

    Accents are folded ("Café" -> "cafe"); cutting prefers a word boundary; Windows device
    names ("con", "nul", ...) get a "-1" suffix because they cannot be file names there.
    """
    if max_len < 1:
        raise ValueError(f"max_len: must be at least 1, got {max_len}")
    folded = unicodedata.normalize("NFKD", str(text)).encode("ascii", "ignore").decode("ascii")
    result = "-".join(re.findall(r"[a-z0-9]+", folded.lower()))
    if len(result) > max_len:
        cut = result[:max_len]
        if result[max_len] != "-" and "-" in cut:
            cut = cut.rsplit("-", 1)[0]
        result = cut.strip("-")
    if not result:
        return "untitled"
    if result in _WINDOWS_RESERVED:
        result = f"{result}-1" if len(result) + 2 <= max_len else "untitled"[:max_len]
    return result
