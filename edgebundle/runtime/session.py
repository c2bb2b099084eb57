"""A loaded bundle: manifest + interpreter + the recipe's feeds. Shared by every mode of the binary and
by the builder's reference run, so the binary and the build-time reference compute the same way."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import numpy as np

from .model import load_interpreter, run, signature
from .payload import Bundle, DirBundle
from .payload import read_manifest as _read_manifest
from .preprocess import ImageError, decode_cost, load, open_image, quantize, to_tensor

# Holds a decode's memory (its bytes, see decode_cost) while it runs: the serving modes' budget.
Admit = Callable[[int], AbstractContextManager[object]]


def bundle_dir() -> Path:
    """Where bundled files are when no payload was passed: next to this package (a build's staging
    directory, or a plain ``python script.py`` next to its model)."""
    return Path(__file__).resolve().parent.parent


def read_manifest(root: Bundle | Path) -> dict[str, Any]:
    return _read_manifest(DirBundle(root) if isinstance(root, Path) else root)


class Session:
    def __init__(
        self,
        bundle: Bundle | Path,
        manifest: dict[str, Any],
        threads: int | None = None,
        max_pixels: int | None = None,
    ) -> None:
        self.max_pixels = max_pixels  # images with more are refused from their header
        self.bundle = DirBundle(bundle) if isinstance(bundle, Path) else bundle
        self.manifest = manifest
        self.recipe: dict[str, Any] = manifest["recipe"]
        self.labels: list[str] | None = manifest.get("labels")
        # The model's bytes, read in place from the binary (or the directory), are the interpreter's
        # model: nothing is unpacked, and every session of a bundle shares the one copy.
        self.model_content = self.bundle.read(manifest["model"]["file"])
        self.interpreter = load_interpreter(manifest["interpreter"]["module"], self.model_content, threads)
        sig = signature(self.interpreter)
        self.inputs: list[dict[str, Any]] = sig["inputs"]
        self.outputs: list[dict[str, Any]] = sig["outputs"]
        image_name = self.recipe["input"]["tensor"]
        self.image_input = next(t for t in self.inputs if t["name"] == image_name)
        # Inputs other than the image get the recipe's constants, computed once.
        self.constant_feeds = {
            t["index"]: quantize(
                np.full(t["shape"], self.recipe["constants"][t["name"]], dtype=np.float32), t
            )
            for t in self.inputs
            if t["name"] != image_name
        }

    def feeds_for_image(
        self, data: bytes | str, admit: Admit | None = None
    ) -> dict[int, np.ndarray[Any, Any]]:
        spec = self.recipe["input"]
        img = open_image(data, self.max_pixels, spec, self.image_input)
        try:
            with admit(decode_cost(img)) if admit else contextlib.nullcontext():
                tensor = to_tensor(load(img), spec, self.image_input)
        finally:
            img.close()  # the decoded pixels go now, not whenever the last reference does
        return {self.image_input["index"]: tensor, **self.constant_feeds}

    def selftest_feeds(self) -> dict[int, np.ndarray[Any, Any]]:
        """Feeds for the self-test image bundled with the model."""
        return self.feeds_for_image(self.bundle.read(self.manifest["selftest"]["image"]))

    def feeds_for_file(self, path: str, admit: Admit | None = None) -> dict[int, np.ndarray[Any, Any]]:
        """An image, or raw tensors: ``.npy`` for a one-input model, ``.npz`` keyed by input name."""
        if path.endswith((".npy", ".npz")):
            return self._raw_feeds(path)
        return self.feeds_for_image(path, admit)

    def infer(self, feeds: dict[int, np.ndarray[Any, Any]]) -> tuple[list[np.ndarray[Any, Any]], float]:
        start = time.perf_counter()
        values = run(self.interpreter, feeds)
        return values, (time.perf_counter() - start) * 1000.0

    def _raw_feeds(self, path: str) -> dict[int, np.ndarray[Any, Any]]:
        try:
            loaded = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            raise ImageError("no such file") from None
        except (OSError, ValueError) as exc:
            raise ImageError(f"not a valid .npy/.npz file: {exc}") from None
        if isinstance(loaded, np.ndarray):
            if len(self.inputs) != 1:
                names = ", ".join(t["name"] for t in self.inputs)
                raise ImageError(f"model has {len(self.inputs)} inputs ({names}); pass an .npz")
            arrays = {self.inputs[0]["name"]: loaded}
        else:
            arrays = {key: loaded[key] for key in loaded.files}
        feeds = {}
        for t in self.inputs:
            if t["name"] not in arrays:
                raise ImageError(f"missing array for input {t['name']!r}")
            arr = arrays[t["name"]]
            if list(arr.shape) != t["shape"] or arr.dtype.name != t["dtype"]:
                raise ImageError(
                    f"input {t['name']!r} wants {t['dtype']}{t['shape']}, "
                    f"got {arr.dtype.name}{list(arr.shape)}"
                )
            feeds[t["index"]] = arr
        return feeds


def default_threads() -> int | None:
    value = os.environ.get("EDGEBUNDLE_THREADS")
    return int(value) if value and value.isdigit() and int(value) > 0 else None


def cap_threads(threads: int | None) -> tuple[int | None, str]:
    """``threads`` capped at the CPUs this process may run on, and a warning when it was capped."""
    cpus = len(os.sched_getaffinity(0))
    if threads is None or threads <= cpus:
        return threads, ""
    return cpus, f"--threads {threads} is more than the {cpus} CPUs this process may use: using {cpus}"
