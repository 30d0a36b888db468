"""One exception family: every message says what was wrong and what to do."""


class HeadstartError(Exception):
    """Base of every error a user can cause; the CLI prints it as one line."""


class DataError(HeadstartError):
    """The image folder, a split or a path is unusable."""


class ModelError(HeadstartError):
    """An unknown model name, layer, or unavailable weights."""


class ArtifactError(HeadstartError):
    """A saved model folder or output path is missing, damaged or taken."""
