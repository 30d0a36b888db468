"""The on-disk cache of CNN codes: one folder per (weights, layer, preprocessing), content-hashed shards."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np


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


_MODE = 0o666 & ~current_umask()  # what open() would give a new file


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _MODE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class CodeStore:
    """CNN codes of one layer, looked up by file identity.

    Each shard is an ``.npz`` (no pickle) named by the SHA-256 of its bytes, written atomically; a shard whose
    bytes no longer match its name (a damaged disk, a hand-edited file) is deleted and its codes recomputed.
    """

    def __init__(self, folder: Path, describe: dict[str, Any]):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        meta = folder / "key.json"
        if not meta.exists():
            write_atomic(meta, json.dumps(describe, indent=1, sort_keys=True).encode())

    def _shards(self) -> list[Path]:
        return sorted(self.folder.glob("*.npz"))

    def lookup(self, ids: list[str]) -> dict[str, np.ndarray]:
        """Codes for those of ``ids`` that are cached."""
        wanted = set(ids)
        found: dict[str, np.ndarray] = {}
        for shard in self._shards():
            try:
                with np.load(shard, allow_pickle=False) as npz:  # the small ids member only
                    if wanted.isdisjoint(npz["ids"].tolist()):
                        continue  # another dataset's shard: not read further
                data = shard.read_bytes()
                if hashlib.sha256(data).hexdigest()[:32] != shard.stem:
                    raise ValueError("checksum mismatch")
                with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                    shard_ids, codes = npz["ids"], npz["codes"]
            except Exception as exc:
                warnings.warn(f"removed damaged cache shard {shard} ({exc}); its codes will be recomputed",
                              stacklevel=2)
                shard.unlink(missing_ok=True)
                continue
            for i, identity in enumerate(shard_ids.tolist()):
                if identity in wanted:
                    found[identity] = codes[i]
        return found

    def add(self, ids: list[str], codes: np.ndarray) -> None:
        """Store one shard of codes (rows in the order of ``ids``)."""
        buffer = io.BytesIO()
        np.savez(buffer, ids=np.asarray(ids, dtype=str), codes=codes.astype(np.float32, copy=False))
        data = buffer.getvalue()
        write_atomic(self.folder / f"{hashlib.sha256(data).hexdigest()[:32]}.npz", data)
