"""`python -m headstart`: the command line."""

from .cli import console

console()
