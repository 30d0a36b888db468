"""Know the data before trusting a score: duplicates, leaks between splits, likely label errors, outliers and
unusable or odd images, all from the codes and figures of the one pass that ``fit`` makes too.

Owns: finding duplicates (``duplicates``), nearest neighbours (``neighbours``), confident learning (``labels``),
image quality and outliers (``quality``), the findings (``findings``), the audit run (``run``), its outputs
(``outputs``: CSV, summary, exclusions; the page is :mod:`headstart.report.audit_page`) and ``fit``'s leak check
(``leakcheck``). May import ``data``, ``codes``, ``heads`` and the foundations; the strategies, ``auto`` and the
report use it (duplicate-aware folds, leaks), the command is :mod:`headstart.cli.audit`.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_LAZY = {"audit": "run", "AuditResult": "findings", "Finding": "findings", "ISSUES": "findings"}
__all__ = ["ISSUES", "AuditResult", "Finding", "audit"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
