"""The default path: measure the data in one pass, score candidate layers, plan within the budget, decide, check by
experiment, fit (``run``); ``advice`` is the same measurement as a recommendation (``headstart advise``).

May import ``data``, ``codes``, ``heads``, ``training`` (lazily: torch loads only when fine-tuning is timed) and the
foundations. ``run.fit_auto`` drives the estimator through its strategy methods. The names below were
``headstart.auto``'s before the package had rooms, and still import from here.
"""

from importlib import import_module
from typing import Any

__all__ = ["AUTO_JSON", "PLANNED", "fit_auto", "given_options"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(import_module("headstart.auto.run"), name)
    raise AttributeError(f"module 'headstart.auto' has no attribute {name!r}")
