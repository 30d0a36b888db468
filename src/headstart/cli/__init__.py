"""The command line: ``main`` and its parser (``app``), one module per family of commands (``fit``, ``model``, ``data``,
``audit``, ``serve``), the up-front checks of what users give (``checks``) and the text people read (``output``).
Imports the library and prints; nothing in the library imports it.
"""

from .app import console, main  # `console`: the `headstart` script and `python -m headstart(.cli)`

__all__ = ["console", "main"]
