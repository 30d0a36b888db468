"""``python -m headstart.cli``: the command line."""

from .app import console

console()
