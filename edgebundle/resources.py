"""Where the data shipped with edgebundle lives.

``recipes/`` and ``targets/`` sit at the top of the repository (data users read and copy) and are
installed into the wheel as the packages ``edgebundle.recipes`` and ``edgebundle.targets``. A source
checkout or editable install reads them from the repository itself.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path
from typing import Literal

Kind = Literal["recipes", "targets"]


def data_dir(kind: Kind) -> Path:
    checkout = Path(__file__).resolve().parent.parent / kind
    if checkout.is_dir() and (Path(__file__).resolve().parent.parent / "pyproject.toml").is_file():
        return checkout
    return Path(str(importlib.resources.files(f"edgebundle.{kind}")))


def bundled(kind: Kind) -> dict[str, Path]:
    """The shipped ``*.toml`` files of one kind, by name (file stem)."""
    return {p.stem: p for p in sorted(data_dir(kind).glob("*.toml"))}
