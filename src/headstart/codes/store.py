"""The on-disk cache of CNN codes (and of each image's figures): one folder per (weights, layer, preprocessing),
content-hashed shards.
"""

from __future__ import annotations

import hashlib
import io
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..data.imagestats import STATS, STATS_VERSION
from ..disk import cache_folder, file_identities, key_of, not_cached, write_atomic, write_cache
from ..errors import CannotWrite


class CodeStore:
    """CNN codes of one layer, looked up by file identity.

    Each shard is an ``.npz`` (no pickle) named by the SHA-256 of its bytes, written atomically; a shard whose
    bytes no longer match its name (a damaged disk, a hand-edited file) is deleted and its codes recomputed.
    """

    def __init__(self, folder: Path, describe: dict[str, Any]):
        self.folder = folder
        self.writable = True
        meta = folder / "key.json"
        try:
            if not meta.exists():
                write_atomic(meta, json.dumps(describe, indent=1, sort_keys=True).encode())
        except CannotWrite as exc:  # a full, read-only or vanished cache: codes are computed, not kept
            self.writable = False
            not_cached(exc)

    def _shards(self) -> list[Path]:
        try:
            return sorted(self.folder.glob("*.npz"))
        except OSError:
            return []

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
        """Store one shard of codes (rows in the order of ``ids``); a refused write is said once, then skipped."""
        if not self.writable:
            return
        buffer = io.BytesIO()
        np.savez(buffer, ids=np.asarray(ids, dtype=str), codes=codes.astype(np.float32, copy=False))
        data = buffer.getvalue()
        self.writable = write_cache(self.folder / f"{hashlib.sha256(data).hexdigest()[:32]}.npz", data)

SHARD_SIZE = 1024  # images per cache shard: a killed run loses at most this much work


def stats_store(cache_dir: Path) -> CodeStore:
    """Where each image's figures (:data:`headstart.data.imagestats.STATS`) are cached, for every model alike. A JPEG
    twice the model's input or more is decoded at reduced size, so its figures (its pixel digest too) can differ a
    little with the model that measured them; duplicates across such a difference are still near duplicates."""
    fields = {"layer": STATS, "v": STATS_VERSION}
    return CodeStore(cache_dir / "codes" / f"{STATS}-{key_of(fields)}", fields)


class StatsWriter:
    """Figures measured elsewhere (the fine-tuning image check) added to the cache in shards of SHARD_SIZE."""

    def __init__(self, cache_dir: str | Path | None | bool, paths: list[Path]):
        folder = cache_folder(cache_dir)
        self.store = stats_store(folder) if folder is not None else None
        self.paths, self.ids, self.rows = paths, [], []

    def __call__(self, index: list[int], values: np.ndarray) -> None:
        if self.store is None:
            return
        self.ids.extend(index)  # positions in ``paths``: identified in bulk when flushed (a folder resolved once)
        self.rows.extend(values)
        if len(self.ids) >= SHARD_SIZE:
            self.flush()

    def flush(self) -> None:
        """Store the rows gathered so far as one shard."""
        if self.store is not None and self.ids:
            identities = file_identities([self.paths[i] for i in self.ids])
            known = [j for j, identity in enumerate(identities) if identity is not None]
            if known:
                self.store.add([identities[j] for j in known], np.stack([self.rows[j] for j in known]))
        self.ids, self.rows = [], []
