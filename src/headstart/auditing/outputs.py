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
SUGGEST_COLUMNS = ("path", "label", "given", "score")  # ``audit --suggest``: what ``fit --relabel`` reads
RELABEL = "relabel"  # an audit CSV's action cell edited to this (or "relabel CLASS") applies the row


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


def suggestions_text(findings: list[Finding]) -> str:
    """The label errors as a relabel list (``path,label,given,score``: the suggested label), most certain first, for
    a person to edit (delete a row to keep its label, or change the label) before ``fit --relabel``."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(SUGGEST_COLUMNS)
    for f in findings:
        if f["issue"] == "label_error":
            writer.writerow([f["path"], f["other"], f["evidence"]["given"], f"{f['score']:.4f}"])
    return buffer.getvalue()


def write_suggestions(result: AuditResult, path: str | os.PathLike) -> Path:
    """Write the label errors' relabel list to ``path`` (atomically)."""
    path = Path(path).expanduser()
    write_atomic(path, suggestions_text(result["findings"]).encode())
    return path


def read_relabels(path: str | os.PathLike) -> list[tuple[Path, str]]:
    """(file, new label) pairs from a CSV with ``path`` and ``label`` columns (``audit --suggest`` writes one), or
    from an audit CSV whose ``action`` cells were edited to ``relabel`` (take ``other``, the suggested label) or
    ``relabel CLASS``; other rows are left alone. One-line errors for anything else."""
    from ..errors import DataError

    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"--relabel {str(path)!r} is not a file; give a CSV of path,label (audit --suggest writes one)")
    rows = list(csv.DictReader(io.StringIO(path.read_text(errors="replace"))))
    columns = set(rows[0]) if rows else set()
    pairs = []
    if {"path", "label"} <= columns:
        pairs = [(row["path"], row["label"]) for row in rows if (row["path"] or "").strip()]
    elif set(CSV_COLUMNS) <= columns:
        for row in rows:
            action = (row["action"] or "").strip()
            if action == RELABEL or action.startswith(RELABEL + " "):
                pairs.append((row["path"], action[len(RELABEL):].strip() or row["other"]))
    else:
        raise DataError(f"--relabel {str(path)!r} has no path and label columns; give a CSV of path,label (audit "
                        f"--suggest writes one) or an audit CSV whose action cells read {RELABEL!r}")
    empty = [name for name, label in pairs if not (label or "").strip()]
    if empty:
        raise DataError(f"--relabel {str(path)!r} gives no label for {len(empty)} file(s), e.g. {empty[0]!r}; fill "
                        "in the label or delete the row")
    return [(Path(name.strip()).expanduser(), label.strip()) for name, label in pairs]
