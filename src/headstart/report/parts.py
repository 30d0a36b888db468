"""The pieces every page of the report shares: its style, tables, thumbnails and the marks a page carries."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

GENERATOR = "<meta name=generator content=headstart>"  # marks a file `headstart report` may replace

#: tells a test (or a person) how many of the page's images loaded
IMAGES_LOADED = ("<script>window.addEventListener('load',()=>{const i=[...document.images];"
                 "document.body.dataset.imagesLoaded=i.filter(x=>x.complete&&x.naturalWidth>0).length;"
                 "document.body.dataset.imagesTotal=i.length;});</script>")


def thumbnail(path: Path, size: int = 128) -> str:
    """An image as a small embedded JPEG (a data URI)."""
    from ..data.decode import open_rgb

    img = open_rgb(path)
    img.thumbnail((size, size))
    buffer = io.BytesIO()
    img.save(buffer, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def table(rows: list[list[Any]], header: list[str]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header) if any(header) else ""
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    head = f"<thead><tr>{head}</tr></thead>" if head else ""
    return f"<table>{head}<tbody>{body}</tbody></table>"


STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:1100px;color:#222;padding:0 1rem}
h1{margin-bottom:.2rem} .sub{color:#666} .cards{display:flex;gap:1rem;flex-wrap:wrap;margin:1rem 0}
.card{background:#f3f6fa;border-radius:8px;padding:.8rem 1.2rem} .card b{display:block;font-size:1.8rem}
table{border-collapse:collapse;margin:.5rem 0;font-size:.9rem} td,th{border-bottom:1px solid #ddd;padding:.25rem .6rem;
text-align:left} .gallery{display:flex;flex-wrap:wrap;gap:.6rem} figure{margin:0;width:140px;font-size:.75rem}
figure img{width:128px;height:128px;object-fit:contain;background:#eee;border-radius:4px} img.plot{max-width:100%}
.wrong{color:#b00}
table.confusion{font-size:.8rem;display:block;overflow-x:auto} table.confusion td{text-align:center;min-width:1.6rem;
border:1px solid #fff;padding:.2rem} table.confusion th.col{writing-mode:vertical-rl;transform:rotate(180deg);
max-height:9rem;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
"""
