"""The text people read: JSON, skipped files, warnings in one line, the version line."""

from __future__ import annotations

import json
import sys
from typing import Any


def _print_json(value: Any) -> None:
    from ..artifact import _json_default

    print(json.dumps(value, indent=2, default=_json_default))


def _skipped_lines(skipped: list[dict[str, str]], limit: int = 10) -> list[str]:
    lines = [f"skipped {len(skipped)} file(s):"] if skipped else []
    lines += [f"  {s['path']}: {s['reason']}" for s in skipped[:limit]]
    if len(skipped) > limit:
        lines.append(f"  ... and {len(skipped) - limit} more (see --json)")
    return lines


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("headstart")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"headstart: warning: {message}", file=sys.stderr)
