"""NumPy arrays as the runtime's tensors, for the unit tests that compare the two."""

from __future__ import annotations

from typing import Any

import numpy as np

from edgebundle.runtime.floats import Real, real
from edgebundle.runtime.tensors import Tensor

FLOAT: dict[str, Any] = {"dtype": "float32", "scale": 0.0, "zero_point": 0}  # an unquantized output


def tensor(arr: Any) -> Tensor:
    """The array as a Tensor: its dtype name, shape and bytes in C order."""
    arr = np.asarray(arr)
    return Tensor(arr.dtype.name, arr.shape, arr.tobytes())


def view(arr: Any, info: dict[str, Any] | None = None) -> Real:
    """The array as the decoders read an output (``info``: its scale and zero point, else none)."""
    return real(tensor(arr), info or FLOAT)
