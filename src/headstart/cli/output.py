"""The text people read: JSON, skipped files, warnings in one line, the version line."""

from __future__ import annotations

import json
import sys
from typing import Any


def print_json(value: Any) -> None:
    """Print ``value`` as indented JSON (paths, numpy values and dataclasses included)."""
    from ..artifact import _json_default

    print(json.dumps(value, indent=2, default=_json_default))


def skipped_lines(skipped: list[dict[str, str]], limit: int = 10) -> list[str]:
    """Skipped files as lines of text, the first ``limit`` of them."""
    lines = [f"skipped {len(skipped)} file(s):"] if skipped else []
    lines += [f"  {s['path']}: {s['reason']}" for s in skipped[:limit]]
    if len(skipped) > limit:
        lines.append(f"  ... and {len(skipped) - limit} more (see --json)")
    return lines


def version() -> str:
    from importlib import metadata

    try:
        return metadata.version("headstart")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


def one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Show a Python warning as one line on stderr (``warnings.showwarning``)."""
    print(f"headstart: warning: {message}", file=sys.stderr)
