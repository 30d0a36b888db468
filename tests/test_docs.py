"""The documentation covers what a user can reach: every public name and command has a reference entry; the README
stays a front page; the release files exist and agree with the package."""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path

import headstart

ROOT = Path(__file__).resolve().parents[1]


def test_every_public_name_has_a_reference_entry_that_resolves():
    entries = re.findall(r"^::: (\S+)$", (ROOT / "docs" / "reference" / "api.md").read_text(), re.M)
    documented = {entry.rsplit(".", 1)[1]: entry for entry in entries}
    assert sorted(set(headstart.__all__) - set(documented)) == []
    for name in headstart.__all__:
        module, attribute = documented[name].rsplit(".", 1)
        assert getattr(importlib.import_module(module), attribute) is getattr(headstart, name), documented[name]


def test_every_command_is_written_into_the_cli_reference():
    sys.path.insert(0, str(ROOT / "docs"))
    try:
        hooks = importlib.import_module("hooks")
    finally:
        sys.path.remove(str(ROOT / "docs"))
    from headstart.cli.app import build_parser

    commands = hooks._commands(build_parser())
    assert {"fit", "predict", "evaluate", "advise", "audit", "export", "serve", "datasets"} <= set(commands)


def test_the_readme_is_a_front_page_and_its_first_command_needs_nothing_beside_the_clone():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 150
    first = readme.split("## First commands", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    assert "../shared" not in first and "headstart datasets flowers" in first and "python -m pytest -q" in first
    assert "SUITE_" not in readme  # no placeholder left


def test_license_changelog_and_version_agree():
    pyproject = (ROOT / "pyproject.toml").read_text()  # tomllib is Python 3.11+
    version = re.search(r'^version = "(.+)"$', pyproject, re.M).group(1)
    assert re.search(r'^license = "Apache-2.0"$', pyproject, re.M)
    assert "Apache License" in (ROOT / "LICENSE").read_text()
    assert f"## [{version}]" in (ROOT / "CHANGELOG.md").read_text()
    assert headstart.__version__ == version
