"""The command line: the parser (``main``), one module per family of commands, the up-front checks of what users
give, and the text people read. Imports the library and prints; never the other way round.
"""

from typing import Any

__all__ = ["main"]


def __getattr__(name: str) -> Any:
    if name == "main":  # the console script `headstart` and `python -m headstart.cli`
        from .main import main

        return main
    raise AttributeError(f"module 'headstart.cli' has no attribute {name!r}")
