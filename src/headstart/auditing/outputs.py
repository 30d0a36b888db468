"""What a person acts on: the CSV (one row per finding: ``path,issue,score,other,action``), the text summary, and the
exclusion list ``fit --exclude`` reads. The HTML page is :mod:`headstart.report.audit_page`.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..disk import write_atomic

if TYPE_CHECKING:
    from .findings import AuditResult, Finding

CSV_COLUMNS = ("path", "issue", "score", "other", "action")


def csv_text(findings: list[Finding]) -> str:
    """The findings as CSV, one row per finding."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for f in findings:
        writer.writerow([f["path"], f["issue"], f"{f['score']:.4f}", f["other"], f["action"]])
    return buffer.getvalue()


def write_csv(result: AuditResult, path: str | os.PathLike) -> Path:
    """Write the findings' CSV to ``path`` (atomically)."""
    path = Path(path).expanduser()
    write_atomic(path, csv_text(result["findings"]).encode())
    return path


def summary_lines(result: AuditResult, limit: int = 5) -> list[str]:
    """The audit in words: counts per issue, then the top findings of each."""
    from .findings import ISSUES

    data = result["data"]
    lines = [f"audited {data['train_images']} training and {data['val_images']} validation images "
             f"({data['split']}) in {result['seconds']['total']:.1f} s"]
    counts = result["counts"]
    if not any(counts.values()):
        return [*lines, "no findings"]
    for issue in ISSUES:
        if counts[issue]:
            lines.append(f"{issue}: {counts[issue]}")
            for f in [f for f in result["findings"] if f["issue"] == issue][:limit]:
                other = f" <-> {f['other']}" if f["other"] else ""
                lines.append(f"  {f['score']:.3f}  {f['path']}{other}")
    note = (result.get("label_errors") or {}).get("note")
    if note and counts["label_error"]:
        lines.append(f"note on label errors: {note}")
    level = result.get("class_level")
    if level:
        lines.append(f"class imbalance (largest / smallest class): {level['imbalance_ratio']}")
        for pair in level["confused_pairs"][:3]:
            lines.append(f"  often confused: {' / '.join(pair['classes'])} ({pair['images']} images)")
    return lines


def read_exclusions(path: str | os.PathLike) -> list[Path]:
    """Files to leave out of a fit: an audit CSV (its ``path`` column) or a plain list (one path per line; ``#``
    starts a comment). Relative paths are taken from the current folder, as the audit wrote them."""
    from ..errors import DataError

    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"--exclude {str(path)!r} is not a file; give an audit CSV or a list of paths")
    text = path.read_text(errors="replace")
    lines = text.splitlines()
    if lines and lines[0].strip().startswith("path,"):
        rows: Any = csv.DictReader(io.StringIO(text))
        names = [row["path"] for row in rows if row.get("path")]
    else:
        names = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    return [Path(name).expanduser() for name in names]
