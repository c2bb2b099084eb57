"""A loaded bundle: manifest + interpreter + the recipe's feeds. Shared by every mode of the binary and
by the builder's reference run, so the binary and the build-time reference compute the same way."""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from .geometry import Frame, Placement, image_geometry, placement
from .model import load_interpreter, run, signature
from .payload import Bundle, DirBundle
from .payload import read_manifest as _read_manifest
from .pixels import element as _element
from .postprocess import summarize
from .preprocess import FULL_SIZE, ImageError, decode_cost, load, open_image, to_tensor
from .tensors import NpyError, Tensor, f32, is_known, read_arrays

if TYPE_CHECKING:
    from .manifest import Manifest, TensorSpec

# Holds a decode's memory (its bytes, see decode_cost) while it runs: the serving modes' budget.
Admit = Callable[[int], AbstractContextManager[object]]


def bundle_dir() -> str:
    """Where bundled files are when no payload was passed: next to this package (a build's staging
    directory, or a plain ``python script.py`` next to its model)."""
    return os.path.dirname(os.path.dirname(os.path.realpath(__file__)))


DETECTION_DECODERS = ("ssd", "yolo", "tflite-detection")


def is_detection(manifest: Manifest) -> bool:
    """Whether the bundle answers with detections (older manifests have no decoder: not)."""
    return manifest["recipe"]["output"].get("decoder") in DETECTION_DECODERS


def read_manifest(root: Bundle | str | os.PathLike[str]) -> Manifest:
    return _read_manifest(DirBundle(root) if isinstance(root, (str, os.PathLike)) else root)


class Session:
    def __init__(
        self,
        bundle: Bundle | str | os.PathLike[str],
        manifest: Manifest,
        threads: int | None = None,
        max_pixels: int | None = None,
    ) -> None:
        self.max_pixels = max_pixels  # images with more are refused from their header
        self.bundle = DirBundle(bundle) if isinstance(bundle, (str, os.PathLike)) else bundle
        self.manifest = manifest
        self.recipe: dict[str, Any] = manifest["recipe"]
        self.labels: list[str] | None = manifest.get("labels")
        # The model's bytes, read in place from the binary (or the directory), are the interpreter's
        # model: nothing is unpacked, and every session of a bundle shares the one copy.
        self.model_content = self.bundle.read(manifest["model"]["file"])
        self.interpreter = load_interpreter(manifest["interpreter"]["module"], self.model_content, threads)
        sig = signature(self.interpreter)
        self.inputs: list[TensorSpec] = sig["inputs"]
        self.outputs: list[TensorSpec] = sig["outputs"]
        image_name = self.recipe["input"]["tensor"]
        self.image_input = next(t for t in self.inputs if t["name"] == image_name)
        # Inputs other than the image get the recipe's constants, computed once.
        self.constant_feeds = {
            t["index"]: constant(self.recipe["constants"][t["name"]], t)
            for t in self.inputs
            if t["name"] != image_name
        }
        geo = image_geometry(self.image_input["shape"], self.recipe["input"]["layout"])
        self.input_size = (geo.width, geo.height)
        # The last image fed (its size and where the resize put it), to map detections back to it;
        # raw tensors are their own image.
        self.frame = Frame(geo.width, geo.height, Placement(geo.width, geo.height, 0, 0))
        self.score_threshold: float | None = None  # --score-threshold: overrides the recipe's
        self.detector: Any = None
        if is_detection(manifest):
            from .detection import Detector  # only detection binaries load the decoders

            self.detector = Detector(self.recipe["output"], self.outputs, self.input_size, self.labels)

    def feeds_for_image(self, data: bytes | str, admit: Admit | None = None) -> dict[int, Tensor]:
        spec = self.recipe["input"]
        img = open_image(data, self.max_pixels, spec, self.image_input)
        try:
            # Detections are reported in the full image's pixels, also when a JPEG was decoded
            # at a fraction of its size (open_image's draft).
            full = img.info.get(FULL_SIZE)
            with admit(decode_cost(img)) if admit else contextlib.nullcontext():
                loaded = load(img)
                full_w, full_h = full or loaded.size
                w, h = self.input_size
                self.frame = Frame(
                    full_w, full_h, placement(loaded.width, loaded.height, w, h, spec["resize"])
                )
                tensor = to_tensor(loaded, spec, self.image_input)
        finally:
            img.close()  # the decoded pixels go now, not whenever the last reference does
        return {self.image_input["index"]: tensor, **self.constant_feeds}

    def selftest_feeds(self) -> dict[int, Tensor]:
        """Feeds for the self-test image bundled with the model."""
        return self.feeds_for_image(self.bundle.read(self.manifest["selftest"]["image"]))

    def feeds_for_file(self, path: str, admit: Admit | None = None) -> dict[int, Tensor]:
        """An image, or raw tensors: ``.npy`` for a one-input model, ``.npz`` keyed by input name."""
        if path.endswith((".npy", ".npz")):
            w, h = self.input_size
            self.frame = Frame(w, h, Placement(w, h, 0, 0))
            return self._raw_feeds(path)
        return self.feeds_for_image(path, admit)

    def infer(self, feeds: dict[int, Tensor]) -> tuple[list[Tensor], float]:
        start = time.perf_counter()
        values = run(self.interpreter, feeds)
        return values, (time.perf_counter() - start) * 1000.0

    def result(self, values: list[Tensor], score_threshold: float | None = None) -> dict[str, Any]:
        """The answer for the outputs of the last input fed: detections in the image's pixels, or
        top-k / the outputs as the recipe says. ``score_threshold`` overrides the session's and the
        recipe's threshold."""
        if self.detector is None:
            return summarize(values, self.outputs, self.recipe["output"], self.labels)
        threshold = score_threshold if score_threshold is not None else self.score_threshold
        return {"detections": self.detector.answer(values, self.frame, threshold)}

    def _raw_feeds(self, path: str) -> dict[int, Tensor]:
        try:
            with open(path, "rb") as f:
                loaded = read_arrays(f.read())
        except FileNotFoundError:
            raise ImageError("no such file") from None
        except IsADirectoryError:
            raise ImageError("is a directory") from None
        except (OSError, NpyError) as exc:
            raise ImageError(f"not a valid .npy/.npz file: {exc}") from None
        if isinstance(loaded, Tensor):
            if len(self.inputs) != 1:
                names = ", ".join(t["name"] for t in self.inputs)
                raise ImageError(f"model has {len(self.inputs)} inputs ({names}); pass an .npz")
            arrays = {self.inputs[0]["name"]: loaded}
        else:
            arrays = loaded
        feeds = {}
        for t in self.inputs:
            if t["name"] not in arrays:
                raise ImageError(f"missing array for input {t['name']!r}")
            arr = arrays[t["name"]]
            if list(arr.shape) != t["shape"] or arr.dtype != t["dtype"]:
                raise ImageError(
                    f"input {t['name']!r} wants {t['dtype']}{t['shape']}, got {arr.dtype}{list(arr.shape)}"
                )
            feeds[t["index"]] = arr
        return feeds


def constant(value: float, tensor: TensorSpec) -> Tensor:
    """A recipe constant filling a whole input: float32, then quantized or cast to the input's type."""
    if not is_known(tensor["dtype"]):
        raise ValueError(f"input {tensor['name']!r} has type {tensor['dtype']}, which edgebundle cannot fill")
    element = _element(f32(value), tensor)
    return Tensor(tensor["dtype"], tuple(tensor["shape"]), element * math.prod(tensor["shape"]))


def default_threads() -> int | None:
    value = os.environ.get("EDGEBUNDLE_THREADS")
    return int(value) if value and value.isdigit() and int(value) > 0 else None


def cap_threads(threads: int | None) -> tuple[int | None, str]:
    """``threads`` capped at the CPUs this process may run on, and a warning when it was capped."""
    cpus = len(os.sched_getaffinity(0))
    if threads is None or threads <= cpus:
        return threads, ""
    return cpus, f"--threads {threads} is more than the {cpus} CPUs this process may use: using {cpus}"
