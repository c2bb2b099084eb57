"""The bytes of an edgebundle binary, written: ``[launcher][runner (zstd)][app payload][trailer]``.

* the runner archive: a folder (a PyInstaller one-folder program) as a flat record stream that the
  launcher unpacks, once per content hash, into a cache on the device;
* the app payload: the model, manifest and self-test files, then a JSON index; read in place by the
  runtime (edgebundle/runtime/payload.py), never unpacked;
* the trailer: where both are, and the runner's cache key.

The layout is defined in edgebundle/launcher/eb_format.h (the launcher's C reads it) and mirrored by the
constants here and in runtime/payload.py; tests/unit/test_payload_format.py holds the three together.
Everything here is pure (bytes in, bytes out), so it is tested without building anything.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ..runtime.payload import FORMAT_VERSION, TRAILER, TRAILER_MAGIC

ARCHIVE_MAGIC = b"EBRUNR01"
RECORD = struct.Struct("<B3xII4xQ")
KIND_DIR, KIND_FILE, KIND_SYMLINK, KIND_END = (ord(c) for c in "DFLE")
KEY_LEN = 32
ENTRY = "run"  # the program inside a runner that the launcher executes
LARGE_FILE = 1 << 20  # a file runner_frames places on its own
# The model starts on a page boundary inside the binary, so that it could be mmapped in place.
MODEL_ALIGN = 4096


@dataclass(frozen=True, kw_only=True)
class Trailer:
    runner_offset: int
    runner_size: int
    app_offset: int
    app_size: int
    index_size: int
    key: str

    def pack(self) -> bytes:
        return TRAILER.pack(
            self.runner_offset,
            self.runner_size,
            self.app_offset,
            self.app_size,
            self.index_size,
            self.key.encode("ascii"),
            FORMAT_VERSION,
            TRAILER.size,
            TRAILER_MAGIC,
        )

    @classmethod
    def unpack(cls, data: bytes) -> Trailer:
        if len(data) != TRAILER.size:
            raise ValueError(f"a trailer is {TRAILER.size} bytes, got {len(data)}")
        runner_offset, runner_size, app_offset, app_size, index_size, key, version, size, magic = (
            TRAILER.unpack(data)
        )
        if magic != TRAILER_MAGIC or version != FORMAT_VERSION or size != TRAILER.size:
            raise ValueError("not an edgebundle trailer (or another format version)")
        return cls(
            runner_offset=runner_offset,
            runner_size=runner_size,
            app_offset=app_offset,
            app_size=app_size,
            index_size=index_size,
            key=key.decode("ascii"),
        )


def read_trailer(binary: Path) -> Trailer:
    with open(binary, "rb") as f:
        f.seek(0, os.SEEK_END)
        if f.tell() < TRAILER.size:
            raise ValueError(f"{binary}: too short to be an edgebundle binary")
        f.seek(-TRAILER.size, os.SEEK_END)
        return Trailer.unpack(f.read())


def runner_key(compressed: bytes) -> str:
    """The runner's cache key on a device: its content hash, so equal runners share one unpacked copy."""
    return hashlib.sha256(b"edgebundle-runner-%d\0" % FORMAT_VERSION + compressed).hexdigest()[:KEY_LEN]


# ---------------------------------------------------------------------------- runner archive


Entry = tuple[int, str, Path]  # kind, relative path, path


def tree_entries(root: Path) -> Iterator[Entry]:
    """(kind, relative path, path) for everything under ``root``: directories before what they hold,
    sorted (the archive is reproducible), symlinks last so that the launcher never writes through one."""
    links: list[Entry] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        here = Path(dirpath)
        for name in [*dirnames, *sorted(filenames)]:
            path = here / name
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                links.append((KIND_SYMLINK, rel, path))
            elif path.is_dir():
                yield KIND_DIR, rel, path
            elif path.is_file():
                yield KIND_FILE, rel, path
            else:
                raise ValueError(f"{path}: not a file, directory or symlink")
        # os.walk does not descend into symlinked directories, which is what we want.
        dirnames[:] = [d for d in dirnames if not (here / d).is_symlink()]
    yield from sorted(links, key=lambda e: e[1])


def write_runner_archive(root: Path, out: BinaryIO) -> int:
    """Write ``root`` as one runner archive to ``out`` (one zstd frame once compressed); returns the
    bytes its files hold."""
    return write_archive_part(list(tree_entries(root)), out, first=True, last=True)


def runner_frames(root: Path, file_frames: int) -> list[list[Entry]]:
    """``root``'s entries cut into the frames the launcher unpacks in parallel: the directories; the
    files in ``file_frames`` groups of about equal bytes (empty ones left out); the symlinks. Written
    one after the other (``write_archive_part``), they are the archive.

    The files of 1 MiB and more go to the group that holds the fewest bytes so far, largest first;
    then the rest, in tree order, fill the groups up to an equal share, least filled first. Keeping
    the many small files (bytecode, most of them) together in tree order lets zstd find what they
    share: 2 groups compress as small as one, 4 ~1% larger, where spreading every file costs ~2%."""
    entries = list(tree_entries(root))
    files = [e for e in entries if e[0] == KIND_FILE]
    size = {e[1]: e[2].stat().st_size for e in files}
    count = max(1, file_frames)
    groups: list[list[Entry]] = [[] for _ in range(count)]
    load = [0] * count
    for entry in sorted((e for e in files if size[e[1]] >= LARGE_FILE), key=lambda e: (-size[e[1]], e[1])):
        lightest = load.index(min(load))
        groups[lightest].append(entry)
        load[lightest] += size[entry[1]]
    share = sum(size.values()) / count
    fill = sorted(range(count), key=lambda g: (load[g], g))
    at = 0
    for entry in (e for e in files if size[e[1]] < LARGE_FILE):
        while at < count - 1 and load[fill[at]] >= share:
            at += 1
        groups[fill[at]].append(entry)
        load[fill[at]] += size[entry[1]]
    place = {e[1]: i for i, e in enumerate(entries)}
    ordered = [sorted(g, key=lambda e: place[e[1]]) for g in groups if g]
    return [
        [e for e in entries if e[0] == KIND_DIR],
        *ordered,
        [e for e in entries if e[0] == KIND_SYMLINK],
    ]


def write_archive_part(entries: list[Entry], out: BinaryIO, *, first: bool, last: bool) -> int:
    """Write ``entries`` as records to ``out``: after the archive's magic when ``first``, followed by
    the end record when ``last``. Returns the bytes its files hold."""
    if first:
        out.write(ARCHIVE_MAGIC)
    total = 0
    for kind, rel, path in entries:
        name = rel.encode()
        if kind == KIND_SYMLINK:
            target = os.readlink(path)
            if os.path.isabs(target):
                raise ValueError(f"{path}: absolute symlink {target!r} would not survive unpacking")
            data = target.encode()
            out.write(RECORD.pack(kind, 0o777, len(name), len(data)) + name + data)
        elif kind == KIND_DIR:
            out.write(RECORD.pack(kind, 0o755, len(name), 0) + name)
        else:
            st = path.stat()
            mode = 0o755 if st.st_mode & stat.S_IXUSR else 0o644
            out.write(RECORD.pack(kind, mode, len(name), st.st_size) + name)
            with open(path, "rb") as f:
                shutil.copyfileobj(f, out)
            total += st.st_size
    if last:
        out.write(RECORD.pack(KIND_END, 0, 0, 0))
    return total


# ---------------------------------------------------------------------------- app payload


def app_payload(files: Mapping[str, bytes], start: int) -> tuple[bytes, int]:
    """The app payload for ``files`` when it begins at offset ``start`` of the binary: (bytes, size of
    its index). The model file (``*.tflite``) is aligned to MODEL_ALIGN within the binary."""
    body = bytearray()
    index: dict[str, list[int]] = {}
    for name in sorted(files, key=lambda n: (n.endswith(".tflite"), n)):
        if name.endswith(".tflite"):
            body += bytes(-(start + len(body)) % MODEL_ALIGN)
        index[name] = [len(body), len(files[name])]
        body += files[name]
    encoded = json.dumps({"files": index}, sort_keys=True, separators=(",", ":")).encode()
    return bytes(body) + encoded, len(encoded)


def assemble(prefix: Path, runner_offset: int, key: str, files: Mapping[str, bytes], out: Path) -> Trailer:
    """Write ``prefix`` (launcher + compressed runner, as cached), the app payload and the trailer."""
    prefix_size = prefix.stat().st_size
    payload, index_size = app_payload(files, prefix_size)
    trailer = Trailer(
        runner_offset=runner_offset,
        runner_size=prefix_size - runner_offset,
        app_offset=prefix_size,
        app_size=len(payload),
        index_size=index_size,
        key=key,
    )
    with open(out, "wb") as f:
        with open(prefix, "rb") as src:
            shutil.copyfileobj(src, f)
        f.write(payload)
        f.write(trailer.pack())
    return trailer


def read_app_files(binary: Path) -> dict[str, bytes]:
    """The app payload's files of a built binary (for tests and inspection)."""
    t = read_trailer(binary)
    with open(binary, "rb") as f:
        f.seek(t.app_offset)
        payload = f.read(t.app_size)
    index = json.loads(payload[len(payload) - t.index_size :])
    return {name: payload[off : off + size] for name, (off, size) in index["files"].items()}
