"""What people read about a model: the HTML report, classification metrics, and the Keras-style summary.

May import ``data``, ``codes`` and the foundations. The names below were ``headstart.report``'s before the package had
rooms, and still import from here.
"""

from importlib import import_module
from typing import Any

_HTML = ("GALLERY", "GENERATOR", "STYLE", "auto_section", "build_report", "confusion_table", "curves_figure",
         "thumbnail", "unfamiliar_section", "write_report")
__all__ = list(_HTML)


def __getattr__(name: str) -> Any:
    if name in _HTML:
        return getattr(import_module("headstart.report.html"), name)  # matplotlib loads only when a report is made
    raise AttributeError(f"module 'headstart.report' has no attribute {name!r}")
