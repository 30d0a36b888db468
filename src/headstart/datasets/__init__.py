"""Image collections that ship with headstart, one call away (as ``sklearn.datasets.load_digits`` and
``keras.datasets`` are): a folder of class folders on disk, ready for ``fit``.

``flowers``: 200 photos of 5 flowers (daisy, dandelion, roses, sunflowers, tulips; 40 each), TensorFlow's
flower_photos as picked for the .NET machine-learning samples, files as published. Licensed CC BY 2.0: every photo's
author and address are in ``LICENSE.txt`` beside them, which must travel with the images.

May import only the foundations.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import DataError

HERE = Path(__file__).resolve().parent
#: name -> what it is (the folder of that name beside this module)
DATASETS = {"flowers": "200 photos of 5 flowers (daisy, dandelion, roses, sunflowers, tulips), CC BY 2.0"}


def path(name: str) -> Path:
    """The folder of the embedded collection ``name`` (class folders, and its ``LICENSE.txt`` of credits)."""
    if name not in DATASETS:
        raise DataError(f"no embedded dataset {name!r}; there is {', '.join(DATASETS)} (`headstart datasets`)")
    folder = HERE / name
    if not folder.is_dir():
        raise DataError(f"the embedded dataset {name!r} is missing from this install ({folder}); reinstall headstart")
    return folder


def flowers() -> Path:
    """The embedded demo: 200 flower photos in 5 class folders (CC BY 2.0; credits in its ``LICENSE.txt``).

    Returns
    -------
    Path
        The folder, to pass to ``headstart fit`` or :meth:`headstart.TransferClassifier.fit`.

    Examples
    --------
    >>> from headstart.datasets import flowers
    >>> clf = headstart.TransferClassifier(strategy="auto").fit(flowers())  # doctest: +SKIP
    """
    return path("flowers")
