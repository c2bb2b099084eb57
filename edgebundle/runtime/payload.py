"""Where a binary's own files are: the app payload appended to the executable, or a plain directory.

An edgebundle binary is ``[launcher][runner (zstd)][app payload][trailer]`` (the byte layout is in
edgebundle/launcher/eb_format.h). The launcher unpacks only the runner (once per content hash, into a
cache) and execs it with the binary itself open in ``$_EDGEBUNDLE_PAYLOAD_FD``; the model, manifest and
self-test files are read from that descriptor, in place, and never written anywhere. The same model
bytes feed the interpreter (``model_content``), so a 100 MB model costs no extraction at all.

Without that variable (the builder's reference run, a plain ``python script.py``, tests) the files are
read from a directory. Standard library only: this module is imported at every start.
"""

from __future__ import annotations

import json
import os
import struct
import sys
from typing import TYPE_CHECKING, Protocol

try:  # the C module itself: hashlib imports every algorithm (and tries OpenSSL) first
    from _blake2 import blake2b
except ImportError:  # another Python
    from hashlib import blake2b

if TYPE_CHECKING:
    from .manifest import Manifest

ENV_PAYLOAD_FD = "_EDGEBUNDLE_PAYLOAD_FD"
TRAILER = struct.Struct("<QQQQQ32sII8s")
TRAILER_MAGIC = b"EDGEBNDL"
FORMAT_VERSION = 1


class PayloadError(Exception):
    """The binary's payload is missing or damaged."""


class Bundle(Protocol):
    def read(self, name: str) -> bytes:
        """The bytes of one bundled file (manifest.json, the model, self-test files)."""
        ...

    def check_digest(self, name: str) -> str:
        """The BLAKE2b-256 of one bundled file (the manifest's ``check_digest``), computed once per
        process."""
        ...

    def describe(self) -> str: ...


class _Digests:
    """Hashing a large model at every start is not free, so the check uses BLAKE2b (14 MB: 17 ms; the
    standard library's own SHA-256, which a binary without OpenSSL has, takes 57 ms), and
    ``--self-test`` checks it before loading and again in the test from one computation. The manifest
    keeps the SHA-256 too: it names the model (inspect, metrics), the BLAKE2b only guards it."""

    def __init__(self) -> None:
        self._digests: dict[str, str] = {}

    def read(self, name: str) -> bytes:
        raise NotImplementedError

    def check_digest(self, name: str) -> str:
        if name not in self._digests:
            self._digests[name] = check_digest(self.read(name))
        return self._digests[name]


def check_digest(data: bytes) -> str:
    """The digest the binary checks its model against at start (the builder writes it the same way)."""
    return blake2b(data, digest_size=32).hexdigest()


class DirBundle(_Digests):
    """Files in a directory (a build's staging directory, or next to the runtime package)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        super().__init__()
        self.root = os.fspath(root)
        self._read: dict[str, bytes] = {}

    def read(self, name: str) -> bytes:
        if name not in self._read:  # once: every session of a --serve pool shares the model's bytes
            with open(os.path.join(self.root, name), "rb") as f:
                self._read[name] = f.read()
        return self._read[name]

    def describe(self) -> str:
        return str(self.root)


class PayloadBundle(_Digests):
    """Files in the app payload of an open binary, read with pread (the descriptor's offset is never
    moved, so anything else reading it is unaffected)."""

    def __init__(self, fd: int) -> None:
        super().__init__()
        self.fd = fd
        size = os.fstat(fd).st_size
        if size < TRAILER.size:
            raise PayloadError("the binary is too short to hold a payload")
        fields = TRAILER.unpack(os.pread(fd, TRAILER.size, size - TRAILER.size))
        _, _, app_offset, app_size, index_size, _, version, trailer_size, magic = fields
        if magic != TRAILER_MAGIC or version != FORMAT_VERSION or trailer_size != TRAILER.size:
            raise PayloadError("no edgebundle payload at the end of the binary")
        if app_offset + app_size > size - TRAILER.size or index_size > app_size:
            raise PayloadError("the payload is truncated")
        index = json.loads(os.pread(fd, index_size, app_offset + app_size - index_size))
        self.files: dict[str, tuple[int, int]] = {
            name: (app_offset + int(offset), int(length)) for name, (offset, length) in index["files"].items()
        }
        self._read: dict[str, bytes] = {}

    def read(self, name: str) -> bytes:
        if name in self._read:  # every session of a --serve pool shares the model's bytes
            return self._read[name]
        try:
            offset, length = self.files[name]
        except KeyError:
            raise FileNotFoundError(f"{name}: not in the binary's payload") from None
        data = os.pread(self.fd, length, offset)
        if len(data) != length:
            raise PayloadError(f"{name}: the payload is truncated")
        self._read[name] = data
        return data

    def describe(self) -> str:
        try:
            return f"the payload of {os.readlink(f'/proc/self/fd/{self.fd}')}"
        except OSError:
            return f"the payload in descriptor {self.fd}"


def open_bundle(fallback: str | os.PathLike[str]) -> Bundle:
    """The payload the launcher passed, else the directory ``fallback``.

    The variable is removed, and the descriptor kept from children, so that a program this one starts
    (``--eb-measure`` runs copies of the binary) gets its own from its own launcher.
    """
    value = os.environ.pop(ENV_PAYLOAD_FD, None)
    if value is None:
        if not os.path.isfile(os.path.join(fallback, "manifest.json")) and getattr(sys, "frozen", False):
            raise PayloadError("this is the unpacked runtime of an edgebundle binary: run the binary itself")
        return DirBundle(fallback)
    fd = int(value)
    os.set_inheritable(fd, False)
    return PayloadBundle(fd)


def read_manifest(bundle: Bundle) -> Manifest:
    manifest: Manifest = json.loads(bundle.read("manifest.json"))
    return manifest
