"""Writing to disk without losing anything: atomic writes, free space, the faults a machine answers with, the cache
folder and file identities.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import stat
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import CannotWrite

#: What the machine answers when a write cannot happen, whatever the program does: full disk, quota, read-only
#: file system, no permission, a folder that vanished.
WRITE_FAULTS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOENT, errno.EFBIG)


def cache_folder(cache_dir: str | os.PathLike | None | bool) -> Path | None:
    """The cache folder a ``cache_dir`` option means: None for the default location, False for no cache."""
    return None if cache_dir is False else Path(cache_dir or default_cache_dir()).expanduser()


def default_cache_dir() -> Path:
    """``$HEADSTART_CACHE_DIR``, else ``$XDG_CACHE_HOME/headstart``, else ``~/.cache/headstart``."""
    if os.environ.get("HEADSTART_CACHE_DIR"):
        return Path(os.environ["HEADSTART_CACHE_DIR"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "headstart"


def key_of(fields: dict[str, Any]) -> str:
    """A short stable hash of JSON-able ``fields``: everything that changes what is cached."""
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:24]


def file_identity(path: Path) -> str | None:
    """Resolved path, size and modification time: a changed file gets a new identity. None if it is gone."""
    try:
        st = path.stat()
    except OSError:
        return None
    return f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"


def file_identities(paths: Sequence[str | os.PathLike]) -> list[str | None]:
    """:func:`file_identity` of many files, each folder resolved once: a file that is not a link resolves to its
    resolved folder plus its name, which spares the per-component walk of resolving every file (thousands of them)."""
    folders: dict[str, str] = {}
    identities: list[str | None] = []
    for path in map(Path, paths):
        try:
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                identities.append(file_identity(path))
                continue
        except OSError:
            identities.append(None)
            continue
        parent = str(path.parent)
        if parent not in folders:
            folders[parent] = str(path.parent.resolve())
        identities.append(f"{os.path.join(folders[parent], path.name)}|{st.st_size}|{st.st_mtime_ns}")
    return identities


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def current_umask() -> int:
    """The process's umask (read without changing it for good)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode a new file gets under the current umask."""
    return 0o666 & ~current_umask()


def apply_umask(folder: Path) -> None:
    """Give every file and folder below ``folder`` (and itself) the mode the umask gives new ones: libraries that
    write through private temporary files (safetensors' 0600) would otherwise make a shared model unreadable."""
    mask = current_umask()
    os.chmod(folder, 0o777 & ~mask)
    for root, dirs, files in os.walk(folder):
        for name in dirs:
            os.chmod(Path(root) / name, 0o777 & ~mask)
        for name in files:
            os.chmod(Path(root) / name, 0o666 & ~mask)


def free_bytes(path: Path) -> int | None:
    """Free space on the file system that holds ``path`` (or its nearest existing folder); None if unknown."""
    path = Path(path).expanduser().absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def megabytes(n: float) -> str:
    """Bytes as MB, for messages."""
    return f"{n / 1e6:.1f} MB"


def cannot_write(path: Path, reason: str, needed: int | None = None, hint: str = "") -> CannotWrite:
    """The one-line error for a write the machine refused: the file, why, what was needed and what is free."""
    free = free_bytes(Path(path).parent)
    sizes = []
    if needed is not None:
        sizes.append(f"needs about {megabytes(needed)}")
    if free is not None:
        sizes.append(f"{megabytes(free)} free there")
    detail = f" ({', '.join(sizes)})" if sizes else ""
    return CannotWrite(f"cannot write {str(path)!r}: {reason}{detail}; " + (hint or "free some space or choose "
                                                                                    "another folder"))


#: How libraries that wrap the system's error (safetensors, torch) still name a refused write in their message.
_FAULT_TEXTS = ("No space left on device", "Disk quota exceeded", "Read-only file system", "Permission denied")


def is_write_fault(exc: BaseException) -> bool:
    """True for the machine refusing a write (see WRITE_FAULTS), however the library that wrote reports it."""
    if isinstance(exc, CannotWrite) or (isinstance(exc, OSError) and exc.errno in WRITE_FAULTS):
        return True
    return any(text in str(exc) for text in (*_FAULT_TEXTS, "failed writing file"))


def reason_of(exc: BaseException) -> str:
    """The system's words for a refused write, from the exception or its message."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc)
    known = next((t for t in _FAULT_TEXTS if t in text), None)
    return known or (text.splitlines()[0] if text else type(exc).__name__)


def space_for(path: Path, needed: int, what: str, hint: str = "") -> None:
    """A one-line error, before any work, when the file system of ``path`` has less than ``needed`` bytes free."""
    free = free_bytes(path)
    if free is not None and free < needed:
        raise CannotWrite(f"not enough space for {what} in {str(Path(path).expanduser())!r}: it needs about "
                          f"{megabytes(needed)}, {megabytes(free)} is free; "
                          + (hint or "free some space or choose another folder"))


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one, never a part; a write the
    machine refuses raises :class:`CannotWrite` (one line) and leaves nothing behind."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.errno in WRITE_FAULTS:
            raise cannot_write(path, reason_of(exc), len(data)) from None
        raise


class CacheWarning(UserWarning):
    """The cache could not be written: results are not cached, the run goes on."""


_WARNED: list[bool] = []  # said already, in this process


def not_cached(exc: CannotWrite) -> None:
    """Say once (per process) that results are not cached, and why; the run goes on."""
    if _WARNED:
        return
    _WARNED.append(True)
    warnings.warn(f"results are not cached: {exc}; the run goes on", CacheWarning, stacklevel=3)


def write_cache(path: Path, data: bytes) -> bool:
    """:func:`write_atomic` for what may be lost (a cache): a refused write is said once and skipped."""
    try:
        write_atomic(path, data)
        return True
    except CannotWrite as exc:
        not_cached(exc)
        return False
