"""The self-test: the embedded sample against the build-time outputs, and the model file against its
digest. ``APP --self-test`` prints it; ``--serve`` runs it before it answers /readyz with 200."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

import numpy as np

from .model import named_outputs

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
    with np.load(io.BytesIO(session.bundle.read(selftest["reference"]))) as ref:
        for key, value in named_outputs(session.outputs, values).items():
            expected = ref[key]
            if expected.shape != value.shape or expected.dtype != value.dtype:
                problems.append(f"output {key}: {value.dtype}{value.shape} != {expected.dtype}")
                continue
            diff = np.abs(value.astype(np.float64) - expected.astype(np.float64))
            max_diff = max(max_diff, float(diff.max(initial=0.0)))
            if value.dtype.kind == "f":
                ok = np.allclose(value, expected, rtol=1e-4, atol=1e-5)
            else:  # quantized kernels may round differently by one step across CPUs
                ok = bool(diff.max(initial=0.0) <= 1)
            if not ok:
                problems.append(f"output {key} differs from the build-time reference")
    return {
        "self_test": "fail" if problems else "pass",
        "max_abs_diff": max_diff,
        "latency_ms": round(ms, 3),
        "problems": problems,
    }
