"""The module paths of the release before the package had rooms, kept working for one release.

``import headstart.features`` (or ``from headstart.classifier import X``) still works: a finder answers each old path
with a module that looks names up in their new homes, and warns once with a DeprecationWarning naming them.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
import warnings
from importlib import import_module
from types import ModuleType
from typing import Any

#: old module -> its new homes, searched in order for each name
MOVED = {
    "headstart.activations": ("headstart.training.activations",),
    "headstart.advisor": ("headstart.auto.advice", "headstart.auto.measure", "headstart.auto.layers",
                          "headstart.auto.plan", "headstart.training.cost", "headstart.codes.backbones"),
    "headstart.backbones": ("headstart.codes.backbones",),
    "headstart.cache": ("headstart.disk", "headstart.codes.store"),
    "headstart.checks": ("headstart.cli.checks",),
    "headstart.classifier": ("headstart.estimator", "headstart.data.inputs"),
    "headstart.export": ("headstart.deploy.export",),
    "headstart.familiarity": ("headstart.heads.familiarity",),
    "headstart.features": ("headstart.codes.extract", "headstart.codes.runners", "headstart.codes.store"),
    "headstart.finetune": ("headstart.training.module", "headstart.training.callbacks",
                           "headstart.training.datamodule", "headstart.training.cost", "headstart.training.run"),
    "headstart.imagecache": ("headstart.data.imagecache",),
    "headstart.images": ("headstart.data.decode",),
    "headstart.imagestats": ("headstart.data.imagestats",),
    "headstart.linear": ("headstart.heads.linear",),
    "headstart.metrics": ("headstart.report.metrics",),
    "headstart.options": ("headstart.training.options", "headstart.data.decode"),
    "headstart.quantize": ("headstart.codes.quantize",),
    "headstart.runtime": ("headstart.deploy.runtime", "headstart.codes.session", "headstart.results"),
    "headstart.summary": ("headstart.report.summary",),
    "headstart.zoo": ("headstart.codes.zoo",),
    "headstart.auditing.command": ("headstart.cli.audit",),
}


class _MovedModule(ModuleType):
    """An old module path: every attribute is read from its new homes (setting one there changes nothing)."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        for home in MOVED[self.__name__]:
            module = import_module(home)
            if hasattr(module, name):
                return getattr(module, name)
        raise AttributeError(f"module {self.__name__!r} has no attribute {name!r} (it moved to one of "
                             f"{', '.join(MOVED[self.__name__])})")


class MovedFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds the old paths in :data:`MOVED`; nothing else."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        """A spec for an old path, None for any other module."""
        return importlib.util.spec_from_loader(fullname, self) if fullname in MOVED else None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        """The stand-in module."""
        return _MovedModule(spec.name)

    def exec_module(self, module: ModuleType) -> None:
        """Warn once, where the old path was imported."""
        homes = " or ".join(MOVED[module.__name__])
        warnings.warn(f"{module.__name__} moved to {homes}; the old path works until the next release",
                      DeprecationWarning, stacklevel=2)  # warnings skips importlib's own frames


def install() -> None:
    """Put the finder on ``sys.meta_path`` (once)."""
    if not any(isinstance(finder, MovedFinder) for finder in sys.meta_path):
        sys.meta_path.append(MovedFinder())
