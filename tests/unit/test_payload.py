"""The app payload and trailer (backends/bundle.py writes, runtime/payload.py reads) and the runner
archive, without building anything."""

from __future__ import annotations

import io
import json
import os
import struct
from pathlib import Path

import pytest

from edgebundle.backends import bundle
from edgebundle.runtime import payload

FILES = {
    "manifest.json": b'{"model": {"file": "model.tflite"}}',
    "model.tflite": bytes(range(256)) * 40,
    "selftest.png": b"\x89PNG fake",
}


def make_binary(tmp_path: Path, prefix: bytes = b"\x7fELF launcher+runner", runner_offset: int = 4) -> Path:
    pre = tmp_path / "prefix.bin"
    pre.write_bytes(prefix)
    out = tmp_path / "app"
    bundle.assemble(pre, runner_offset, "0123456789abcdef" * 2, FILES, out)
    return out


def test_assemble_then_read_back(tmp_path: Path) -> None:
    binary = make_binary(tmp_path)
    t = bundle.read_trailer(binary)
    size = binary.stat().st_size
    assert t.runner_offset == 4
    assert t.runner_size == len(b"\x7fELF launcher+runner") - 4
    assert t.app_offset == len(b"\x7fELF launcher+runner")
    assert t.app_offset + t.app_size + payload.TRAILER.size == size
    assert t.key == "0123456789abcdef" * 2
    assert bundle.read_app_files(binary) == FILES
    assert binary.read_bytes().startswith(b"\x7fELF launcher+runner")


def test_the_model_starts_on_a_page_boundary(tmp_path: Path) -> None:
    binary = make_binary(tmp_path)
    data = binary.read_bytes()
    offset = data.index(FILES["model.tflite"])
    assert offset % bundle.MODEL_ALIGN == 0


def test_app_payload_index_is_the_last_bytes() -> None:
    body, index_size = bundle.app_payload(FILES, start=100)
    index = json.loads(body[-index_size:])
    for name, (offset, size) in index["files"].items():
        assert body[offset : offset + size] == FILES[name]
    assert (100 + index["files"]["model.tflite"][0]) % bundle.MODEL_ALIGN == 0


def test_payload_bundle_reads_in_place(tmp_path: Path) -> None:
    binary = make_binary(tmp_path)
    fd = os.open(binary, os.O_RDONLY)
    try:
        os.lseek(fd, 7, os.SEEK_SET)
        b = payload.PayloadBundle(fd)
        assert b.read("model.tflite") == FILES["model.tflite"]
        assert b.read("model.tflite") is b.read("model.tflite")  # read once, shared
        assert payload.read_manifest(b) == {"model": {"file": "model.tflite"}}
        assert os.lseek(fd, 0, os.SEEK_CUR) == 7  # pread only: the offset is untouched
        with pytest.raises(FileNotFoundError, match=r"other\.bin"):
            b.read("other.bin")
        assert str(binary) in b.describe()
    finally:
        os.close(fd)


@pytest.mark.parametrize("cut", [1, payload.TRAILER.size, 200])
def test_truncated_or_foreign_files_are_payload_errors(tmp_path: Path, cut: int) -> None:
    binary = make_binary(tmp_path)
    data = binary.read_bytes()
    binary.write_bytes(data[:-cut])
    fd = os.open(binary, os.O_RDONLY)
    try:
        with pytest.raises(payload.PayloadError):
            payload.PayloadBundle(fd)
    finally:
        os.close(fd)


def test_open_bundle_takes_the_launcher_fd_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    binary = make_binary(tmp_path)
    fd = os.open(binary, os.O_RDONLY)
    os.set_inheritable(fd, True)
    monkeypatch.setenv(payload.ENV_PAYLOAD_FD, str(fd))
    try:
        b = payload.open_bundle(tmp_path / "unused")
        assert isinstance(b, payload.PayloadBundle)
        assert payload.ENV_PAYLOAD_FD not in os.environ  # children get their own from their launcher
        assert not os.get_inheritable(fd)
    finally:
        os.close(fd)


def test_open_bundle_without_a_launcher_reads_the_directory(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text('{"a": 1}')
    b = payload.open_bundle(tmp_path)
    assert isinstance(b, payload.DirBundle)
    assert payload.read_manifest(b) == {"a": 1}


def test_trailer_unpack_rejects_other_bytes() -> None:
    with pytest.raises(ValueError, match="88 bytes"):
        bundle.Trailer.unpack(b"x" * 10)
    with pytest.raises(ValueError, match="not an edgebundle trailer"):
        bundle.Trailer.unpack(b"x" * 88)


def test_runner_key_is_a_content_hash() -> None:
    assert bundle.runner_key(b"a") == bundle.runner_key(b"a")
    assert bundle.runner_key(b"a") != bundle.runner_key(b"b")
    assert len(bundle.runner_key(b"a")) == bundle.KEY_LEN
    assert set(bundle.runner_key(b"a")) <= set("0123456789abcdef")


# ---------------------------------------------------------------------------- runner archive


def read_archive(data: bytes) -> list[tuple[str, str, int, bytes]]:
    """A reader written from the format's description, independent of the writer."""
    f = io.BytesIO(data)
    assert f.read(8) == bundle.ARCHIVE_MAGIC
    out = []
    while True:
        kind, mode, plen, dlen = struct.unpack("<B3xII4xQ", f.read(24))
        if chr(kind) == "E":
            assert f.read() == b""
            return out
        path = f.read(plen).decode()
        out.append((chr(kind), path, mode, f.read(dlen)))


def make_tree(root: Path) -> None:
    (root / "_internal" / "numpy").mkdir(parents=True)
    (root / "run").write_bytes(b"#!/bin/sh\n")
    (root / "run").chmod(0o755)
    (root / "_internal" / "numpy" / "core.so").write_bytes(b"so")
    (root / "_internal" / "base_library.zip").write_bytes(b"zip")
    (root / "_internal" / "libz.so.1").symlink_to("numpy/core.so")
    (root / "_internal" / "numpy" / "aa").symlink_to("../base_library.zip")


def test_runner_archive_dirs_first_symlinks_last(tmp_path: Path) -> None:
    make_tree(tmp_path / "t")
    out = io.BytesIO()
    total = bundle.write_runner_archive(tmp_path / "t", out)
    entries = read_archive(out.getvalue())
    assert [(k, p) for k, p, _, _ in entries] == [
        ("D", "_internal"),
        ("F", "run"),
        ("D", "_internal/numpy"),
        ("F", "_internal/base_library.zip"),
        ("F", "_internal/numpy/core.so"),
        ("L", "_internal/libz.so.1"),
        ("L", "_internal/numpy/aa"),
    ]
    modes = {p: m for _, p, m, _ in entries}
    assert modes["run"] == 0o755
    assert modes["_internal/base_library.zip"] == 0o644
    data = {p: d for _, p, _, d in entries}
    assert data["_internal/libz.so.1"] == b"numpy/core.so"
    assert data["_internal/numpy/core.so"] == b"so"
    assert total == len(b"#!/bin/sh\n") + 2 + 3


def test_runner_frames_are_the_archive_in_balanced_parts(tmp_path: Path) -> None:
    """Directories, then the files in groups of about equal bytes (large files spread first, small
    ones in tree order), then symlinks; written one after the other they read as one archive."""
    root = tmp_path / "t"
    make_tree(root)
    sizes = {"_internal/big1.so": 3 << 20, "_internal/big2.so": 2 << 20, "_internal/big3.so": 1 << 20}
    sizes |= {f"_internal/numpy/m{i:02}.pyc": 100_000 + i for i in range(40)}
    for rel, n in sizes.items():
        (root / rel).write_bytes(bytes([len(rel)]) * n)
    frames = bundle.runner_frames(root, 3)
    assert len(frames) == 5
    assert {e[0] for e in frames[0]} == {bundle.KIND_DIR}
    assert {e[0] for e in frames[-1]} == {bundle.KIND_SYMLINK}
    groups = [[rel for _, rel, _ in g] for g in frames[1:-1]]
    assert sorted(rel for g in groups for rel in g) == sorted(
        [*sizes, "run", "_internal/base_library.zip", "_internal/numpy/core.so"]
    )
    order = [rel for kind, rel, _ in bundle.tree_entries(root) if kind == bundle.KIND_FILE]
    assert all(g == sorted(g, key=order.index) for g in groups)  # each group in tree order
    loads = [sum((root / rel).stat().st_size for rel in g) for g in groups]
    assert max(loads) - min(loads) <= 1 << 20  # within a large file of each other
    assert [rel for rel in groups[0] if "big" in rel] == ["_internal/big1.so"]  # large files spread
    out = io.BytesIO()
    total = sum(
        bundle.write_archive_part(part, out, first=i == 0, last=i == len(frames) - 1)
        for i, part in enumerate(frames)
    )
    assert total == sum(loads)
    entries = read_archive(out.getvalue())
    assert sorted((k, p) for k, p, _, _ in entries) == sorted(
        (chr(kind), rel) for kind, rel, _ in bundle.tree_entries(root)
    )
    assert bundle.runner_frames(root, 3) == frames  # reproducible


def test_runner_archive_refuses_absolute_symlinks(tmp_path: Path) -> None:
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "bad").symlink_to("/etc/passwd")
    with pytest.raises(ValueError, match="absolute symlink"):
        bundle.write_runner_archive(tmp_path / "t", io.BytesIO())


def test_a_bundled_file_is_hashed_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    binary = make_binary(tmp_path)
    fd = os.open(binary, os.O_RDONLY)
    calls: list[int] = []
    real = payload.blake2b
    monkeypatch.setattr(payload, "blake2b", lambda data, **kw: calls.append(len(data)) or real(data, **kw))
    try:
        b = payload.PayloadBundle(fd)
        digest = b.check_digest("model.tflite")
        assert digest == real(FILES["model.tflite"], digest_size=32).hexdigest()
        assert b.check_digest("model.tflite") == digest  # --self-test checks it twice, from one hash
        assert calls == [len(FILES["model.tflite"])]
    finally:
        os.close(fd)
