"""The audit as a person reads it: one self-contained HTML page, thumbnails of each finding side by side (nothing
fetched), written atomically."""

from __future__ import annotations

import html
import os
from pathlib import Path

from ..auditing.findings import ISSUES, AuditResult, Finding
from ..auditing.outputs import summary_lines
from ..disk import write_atomic
from .parts import IMAGES_LOADED, STYLE, thumbnail

PAGE_MARKER = "<meta name=generator content=headstart-audit>"  # marks a page `headstart audit --out` may replace
SHOWN = 40  # findings shown per issue on the page (all are in the CSV and JSON)
SET_SHOWN = 12  # members pictured per duplicate set (all are named in the JSON)
TITLES = {
    "exact_duplicate": "Exact duplicates (identical pixels)", "near_duplicate": "Near duplicates",
    "leak": "Leaks: validation images that repeat a training image",
    "label_error": "Likely label errors", "outlier": "Outliers", "unreadable": "Unreadable files",
    "small": "Small images", "dark": "Nearly black", "light": "Nearly white", "blurry": "Blurred",
    "low_information": "Nearly uniform", "odd_aspect": "Extreme aspect ratio", "grayscale": "Grayscale among colour",
}


def _figure(path: str, caption: str) -> str:
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


def _set_html(found: dict) -> str:
    """One duplicate set, every member pictured (up to SET_SHOWN): which to keep, which are identical copies."""
    exact_of = found.get("exact_copy_of", {})
    figures = []
    for path, label in list(zip(found["paths"], found["labels"]))[:SET_SHOWN]:
        role = ("keep" if path == found["keep"] else f"identical to {Path(exact_of[path]).name}" if path in exact_of
                else "near copy")
        figures.append(_figure(path, f"{Path(path).name} ({label}): {role}"))
    more = len(found["paths"]) - SET_SHOWN
    identical = len(exact_of)
    words = (f"{found['split']}: {len(found['paths'])} images, {identical} of them identical copies"
             + (", labels disagree" if found["conflicting_labels"] else "")
             + (f"; {more} more in the JSON" if more > 0 else ""))
    return (f"<div class=finding data-issue=duplicate_set><p>{html.escape(words)}</p><div class=pics>"
            f"{''.join(figures)}</div></div>")


def build_page(result: AuditResult, title: str = "headstart audit") -> str:
    """The audit as one self-contained HTML page (thumbnails embedded; nothing fetched)."""
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
    sets = result.get("duplicate_sets") or []
    if sets:
        more = f" (the first {SHOWN}; all in the JSON)" if len(sets) > SHOWN else ""
        parts.append(f"<h2 id=duplicate_sets>Duplicate sets, whole: {len(sets)}{more}</h2>")
        parts.extend(_set_html(found) for found in sets[:SHOWN])
    style = STYLE + (".finding{border-bottom:1px solid #ddd;padding:.5rem 0}"
                     " .pics{display:flex;flex-wrap:wrap;gap:.6rem}"
                     " figure{width:260px} .none{width:128px;height:128px;background:#eee}")
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{html.escape(title)}</title>"
            f"{PAGE_MARKER}<style>{style}</style></head><body>{''.join(parts)}{IMAGES_LOADED}</body></html>")


def write_page(result: AuditResult, path: str | os.PathLike, title: str = "headstart audit") -> Path:
    """Write the HTML page to ``path`` (atomically)."""
    path = Path(path).expanduser()
    write_atomic(path, build_page(result, title).encode())
    return path
