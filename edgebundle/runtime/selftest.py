"""The self-test: the embedded sample against the build-time outputs, and the model file against its
digest. ``APP --self-test`` prints it; ``--serve`` runs it before it answers /readyz with 200."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from .model import named_outputs
from .tensors import read_npz

if TYPE_CHECKING:
    from .session import Session


def run_self_test(session: Session) -> dict[str, Any]:
    """``{"self_test": "pass" | "fail", "max_abs_diff", "latency_ms", "problems": [...]}``."""
    manifest = session.manifest
    problems = []
    digest = session.bundle.check_digest(manifest["model"]["file"])
    if digest != manifest["model"]["check_digest"]:
        problems.append(f"model BLAKE2b digest {digest} does not match the manifest")
    selftest = manifest["selftest"]
    feeds = session.selftest_feeds()
    values, ms = session.infer(feeds)
    max_diff = 0.0
    ref = read_npz(session.bundle.read(selftest["reference"]))
    for key, value in named_outputs(session.outputs, values).items():
        expected = ref.get(key)
        if expected is None or expected.shape != value.shape or expected.dtype != value.dtype:
            want = f"{expected.dtype}{expected.shape}" if expected is not None else "nothing"
            problems.append(f"output {key}: {value.dtype}{value.shape} != {want}")
            continue
        pairs = [(float(a), float(b)) for a, b in zip(value.values(), expected.values(), strict=True)]
        diff = max((abs(a - b) for a, b in pairs), default=0.0)
        if any(math.isnan(a) != math.isnan(b) for a, b in pairs):
            diff = math.nan
        max_diff = diff if math.isnan(diff) else max(max_diff, diff)
        # floats: numpy.allclose(value, expected, rtol=1e-4, atol=1e-5); quantized kernels may round
        # differently by one step across CPUs
        ok = all(_close(a, b) for a, b in pairs) if value.is_float else diff <= 1
        if not ok:
            problems.append(f"output {key} differs from the build-time reference")
    return {
        "self_test": "fail" if problems else "pass",
        "max_abs_diff": max_diff,
        "latency_ms": round(ms, 3),
        "problems": problems,
    }


def _close(a: float, b: float) -> bool:
    if a == b:  # equal infinities too
        return True
    return abs(a - b) <= 1e-5 + 1e-4 * abs(b)
