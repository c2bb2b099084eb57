"""Writing ``.npz`` files byte-for-byte reproducibly (NumPy's savez stamps each member with the
current time), atomically (a temp file renamed into place)."""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip member can carry


def save_npz(path: str | Path, arrays: dict[str, np.ndarray[Any, Any]]) -> None:
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
            for key, value in arrays.items():
                buf = io.BytesIO()
                np.lib.format.write_array(buf, np.asanyarray(value), allow_pickle=False)  # type: ignore[no-untyped-call]
                info = zipfile.ZipInfo(f"{key}.npy", date_time=_EPOCH)
                info.external_attr = 0o644 << 16
                zf.writestr(info, buf.getvalue())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
