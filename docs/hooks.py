"""MkDocs hook: the command-line reference written from the parser itself, so it can never disagree with it."""

from __future__ import annotations

import argparse
from pathlib import Path

INTRO = """# Command line

Every command and option, as `headstart COMMAND --help` prints them (this page is written from the parser when the
documentation is built). `python -m headstart ...` works the same. Every option is checked before any model is
loaded or image read: a mistake prints one line and exits with code 2.
"""


def _commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def on_pre_build(config) -> None:
    from headstart.cli.app import build_parser

    parser = build_parser()
    parts = [INTRO, "## headstart", "```text", parser.format_help().rstrip(), "```"]
    for name, command in _commands(parser).items():
        parts += [f"## headstart {name}", "```text", command.format_help().rstrip(), "```"]
    target = Path(config["docs_dir"]) / "reference" / "cli.md"
    text = "\n".join(parts) + "\n"
    if not target.exists() or target.read_text() != text:
        target.write_text(text)
