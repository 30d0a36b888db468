"""What a person acts on: the CSV (one row per finding: ``path,issue,score,other,action``), the text summary, and a
self-contained HTML page with thumbnails side by side. Every file is written atomically."""

from __future__ import annotations

import csv
import html
import io
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..cache import write_atomic

if TYPE_CHECKING:
    from .findings import AuditResult, Finding

CSV_COLUMNS = ("path", "issue", "score", "other", "action")
PAGE_MARKER = "<meta name=generator content=headstart-audit>"  # marks a page `headstart audit --out` may replace
SHOWN = 40  # findings shown per issue on the page (all are in the CSV and JSON)
TITLES = {
    "exact_duplicate": "Exact duplicates (identical pixels)", "near_duplicate": "Near duplicates",
    "leak": "Leaks: validation images that repeat a training image",
    "label_error": "Likely label errors", "outlier": "Outliers", "unreadable": "Unreadable files",
    "small": "Small images", "dark": "Nearly black", "light": "Nearly white", "blurry": "Blurred",
    "low_information": "Nearly uniform", "odd_aspect": "Extreme aspect ratio", "grayscale": "Grayscale among colour",
}


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


def _figure(path: str, caption: str) -> str:
    from ..report import thumbnail

    try:
        source = thumbnail(Path(path), 128)
    except Exception:  # unreadable: no picture, the caption says why
        source = ""
    image = f'<img src="{source}" alt="{html.escape(Path(path).name)}">' if source else "<div class=none></div>"
    return f"<figure>{image}<figcaption>{html.escape(caption)}</figcaption></figure>"


def _finding_html(f: Finding) -> str:
    name = Path(f["path"]).name
    evidence = f["evidence"]
    if f["issue"] in ("exact_duplicate", "near_duplicate", "leak"):
        pictures = (_figure(f["path"], f"{f['split']}: {name} ({evidence.get('label', '')})")
                    + _figure(f["other"], f"{'train' if f['issue'] == 'leak' else f['split']}: "
                                          f"{Path(f['other']).name} ({evidence.get('other_label', '')})"
                                          + ("" if f["issue"] == "leak" else ", the copy to keep")))
    elif f["issue"] == "label_error":
        pictures = _figure(f["path"], f"{name}: filed {evidence['given']} (p {evidence['p_given']:.2f}), looks like "
                                      f"{evidence['suggested']} (p {evidence['p_suggested']:.2f}); "
                                      f"{evidence['neighbours_agreeing']:.0%} of neighbours agree with the label")
    else:
        pictures = _figure(f["path"], f"{name} ({f['split']})")
    return (f"<div class=finding data-issue={f['issue']}><div class=pics>{pictures}</div><p>score "
            f"<b>{f['score']:.3f}</b>: {html.escape(f['action'])}</p></div>")


def build_page(result: AuditResult, title: str = "headstart audit") -> str:
    """The audit as one self-contained HTML page (thumbnails embedded; nothing fetched)."""
    from ..report import STYLE
    from .findings import ISSUES

    counts = result["counts"]
    cards = "".join(f"<div class=card>{html.escape(issue)}<b>{n}</b></div>" for issue, n in counts.items() if n)
    parts = [f"<h1>{html.escape(title)}</h1>",
             f"<p class=sub>{html.escape(summary_lines(result)[0])}</p>",
             f"<div class=cards>{cards or '<div class=card>findings<b>0</b></div>'}</div>"]
    level = result.get("class_level")
    if level:
        rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{v}</td></tr>" for k, v in level["counts"].items())
        confused = "".join(f"<li>{html.escape(' / '.join(p['classes']))}: {p['images']} images</li>"
                           for p in level["confused_pairs"])
        parts.append(f"<h2>Classes</h2><p>imbalance (largest / smallest): {level['imbalance_ratio']}</p>"
                     f"<table><tr><th>class</th><th>images</th></tr>{rows}</table>"
                     + (f"<p>most often confused:</p><ul>{confused}</ul>" if confused else ""))
    for issue in ISSUES:
        shown = [f for f in result["findings"] if f["issue"] == issue]
        if not shown:
            continue
        more = f" (the first {SHOWN}; all in the CSV)" if len(shown) > SHOWN else ""
        parts.append(f"<h2 id={issue}>{html.escape(TITLES[issue])}: {len(shown)}{more}</h2>")
        parts.extend(_finding_html(f) for f in shown[:SHOWN])
    script = ("<script>window.addEventListener('load',()=>{const i=[...document.images];"
              "document.body.dataset.imagesLoaded=i.filter(x=>x.complete&&x.naturalWidth>0).length;"
              "document.body.dataset.imagesTotal=i.length;});</script>")
    style = STYLE + (".finding{border-bottom:1px solid #ddd;padding:.5rem 0} .pics{display:flex;gap:.6rem}"
                     " figure{width:260px} .none{width:128px;height:128px;background:#eee}")
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{html.escape(title)}</title>"
            f"{PAGE_MARKER}<style>{style}</style></head><body>{''.join(parts)}{script}</body></html>")


def write_page(result: AuditResult, path: str | os.PathLike, title: str = "headstart audit") -> Path:
    """Write the HTML page to ``path`` (atomically)."""
    path = Path(path).expanduser()
    write_atomic(path, build_page(result, title).encode())
    return path


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
