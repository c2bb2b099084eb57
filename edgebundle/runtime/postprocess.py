"""Raw output tensors -> the JSON result the binary prints (top-k with labels, or every output)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .manifest import TensorSpec


def dequantize(arr: np.ndarray[Any, Any], tensor: TensorSpec) -> np.ndarray[Any, Any]:
    if np.dtype(tensor["dtype"]).kind == "f" or not tensor["scale"]:
        return arr
    return (arr.astype(np.float32) - np.float32(tensor["zero_point"])) * np.float32(tensor["scale"])


def softmax(x: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    x = x.astype(np.float32)
    e = np.exp(x - x.max())
    out: np.ndarray[Any, Any] = e / e.sum()
    return out


def target_output(outputs: list[TensorSpec], name: str | None) -> int:
    """Index of the output that softmax/top-k apply to: the named one, else the first."""
    if name is None:
        return 0
    for i, info in enumerate(outputs):
        if info["name"] == name:
            return i
    raise ValueError(f"model has no output named {name!r}")


def summarize(
    values: list[np.ndarray[Any, Any]],
    outputs: list[TensorSpec],
    spec: dict[str, Any],
    labels: list[str] | None,
) -> dict[str, Any]:
    """The JSON-able result for one inference."""
    chosen = target_output(outputs, spec.get("tensor"))
    result: dict[str, Any] = {}
    listed = []
    for i, (arr, info) in enumerate(zip(values, outputs, strict=True)):
        real = dequantize(arr, info) if spec.get("dequantize", True) else arr
        if i == chosen and spec.get("softmax"):
            real = softmax(real.reshape(-1)).reshape(real.shape)
        if i == chosen and spec.get("top_k"):
            result["top_k"] = top_k(real, int(spec["top_k"]), labels)
            continue
        listed.append(
            {
                "name": info["name"],
                "shape": list(arr.shape),
                "dtype": arr.dtype.name if not spec.get("dequantize", True) else real.dtype.name,
                "values": real.reshape(-1).tolist(),
            }
        )
    if listed:
        result["outputs"] = listed
    return result


def top_k(scores: np.ndarray[Any, Any], k: int, labels: list[str] | None) -> list[dict[str, Any]]:
    flat = scores.reshape(-1)
    k = min(k, flat.size)
    # Stable order: highest score first, lower index first among equal scores.
    order = np.argsort(-flat.astype(np.float64), kind="stable")[:k]
    out = []
    for index in order:
        item: dict[str, Any] = {"index": int(index), "score": round(float(flat[index]), 6)}
        if labels is not None and index < len(labels):
            item["label"] = labels[index]
        out.append(item)
    return out
