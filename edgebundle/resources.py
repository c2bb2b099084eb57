"""Where the data shipped with edgebundle lives.

``recipes/`` and ``targets/`` sit at the top of the repository (data users read and copy) and are
installed into the wheel as ``edgebundle/recipes`` and ``edgebundle/targets``. An installed package
reads them from next to this module; a source checkout or editable install from the repository.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

Kind = Literal["recipes", "targets"]

_PACKAGE = Path(__file__).resolve().parent


def data_dir(kind: Kind) -> Path:
    # A plain directory path, not importlib.resources.files(): the data packages have no __init__.py,
    # and files() of a namespace package is a MultiplexedPath whose str() is not a path (the wheel
    # install listed no targets and crashed with KeyError before this).
    installed = _PACKAGE / kind
    if installed.is_dir():
        return installed
    return _PACKAGE.parent / kind


def bundled(kind: Kind) -> dict[str, Path]:
    """The shipped ``*.toml`` files of one kind, by name (file stem)."""
    return {p.stem: p for p in sorted(data_dir(kind).glob("*.toml"))}
