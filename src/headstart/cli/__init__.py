"""The command line: ``main`` and its parser (``app``), one module per family of commands (``fit``, ``model``, ``data``,
``audit``), the up-front checks of what users give (``checks``) and the text people read (``output``). Imports the
library and prints; nothing in the library imports it.
"""

import warnings
from importlib import import_module
from typing import Any

from .app import console, main  # `console`: the `headstart` script and `python -m headstart(.cli)`

__all__ = ["console", "main"]

#: where the names of the one-module command line of the previous release went
_MOVED = {"NOT_RESUMED": "fit", "cmd_fit": "fit", "cmd_evaluate": "model", "cmd_predict": "model",
          "cmd_report": "model", "cmd_export": "model", "cmd_summary": "model", "cmd_advise": "data",
          "cmd_extract": "data", "cmd_models": "data", "OneLineParser": "app", "build_parser": "app",
          "TRAINING_STACK": "app"}


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        warnings.warn(f"headstart.cli.{name} moved to headstart.cli.{_MOVED[name]}; the old path works until the "
                      "next release", DeprecationWarning, stacklevel=2)
        return getattr(import_module(f"{__name__}.{_MOVED[name]}"), name)
    raise AttributeError(f"module 'headstart.cli' has no attribute {name!r}")
