"""One exception family: every message says what was wrong and what to do."""

from __future__ import annotations


class HeadstartError(Exception):
    """Base of every error a user can cause; the CLI prints it as one line."""


class DataError(HeadstartError):
    """The image folder, a split or a path is unusable."""


class ModelError(HeadstartError):
    """An unknown model name, layer, or unavailable weights."""


class ArtifactError(HeadstartError):
    """A saved model folder or output path is missing, damaged or taken."""


class CannotWrite(ArtifactError):
    """The machine refused a write (a full disk, a quota, a read-only or vanished folder); the message names the
    file, the reason, what was needed and what is free."""
