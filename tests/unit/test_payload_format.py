"""The binary's byte layout is written by Python (backends/bundle.py), read by C (launcher.c) and by
the runtime (runtime/payload.py): the constants of all three must agree with eb_format.h."""

from __future__ import annotations

import re

from edgebundle.backends import bundle, launcher
from edgebundle.runtime import payload

HEADER = (launcher.SOURCE_DIR / "eb_format.h").read_text()


def define(name: str) -> str:
    found = re.search(rf"^#define {name} (.+)$", HEADER, re.MULTILINE)
    assert found, name
    return found.group(1).strip()


def string(name: str) -> bytes:
    return define(name).strip('"').encode()


def test_trailer_constants_agree() -> None:
    assert int(define("EB_TRAILER_SIZE")) == payload.TRAILER.size == 88
    assert string("EB_TRAILER_MAGIC") == payload.TRAILER_MAGIC
    assert int(define("EB_FORMAT_VERSION")) == payload.FORMAT_VERSION
    assert int(define("EB_KEY_LEN")) == bundle.KEY_LEN


def test_trailer_field_offsets_match_the_header_comment() -> None:
    # "0 u64 runner_offset ... 80 char magic[8]" in the header is the documented layout.
    offsets = [int(m) for m in re.findall(r"^ \*   (\d+)\s+(?:u64|u32|char)", HEADER, re.MULTILINE)]
    assert offsets[:9] == [0, 8, 16, 24, 32, 40, 72, 76, 80]
    packed = bundle.Trailer(
        runner_offset=1, runner_size=2, app_offset=3, app_size=4, index_size=5, key="ab" * 16
    ).pack()
    assert packed[0:8] == (1).to_bytes(8, "little")
    assert packed[32:40] == (5).to_bytes(8, "little")
    assert packed[40:72] == b"ab" * 16
    assert packed[72:76] == payload.FORMAT_VERSION.to_bytes(4, "little")
    assert packed[76:80] == (88).to_bytes(4, "little")
    assert packed[80:] == payload.TRAILER_MAGIC


def test_archive_constants_agree() -> None:
    assert string("EB_ARCHIVE_MAGIC") == bundle.ARCHIVE_MAGIC
    assert int(define("EB_RECORD_SIZE")) == bundle.RECORD.size == 24
    for name, value in [
        ("EB_KIND_DIR", bundle.KIND_DIR),
        ("EB_KIND_FILE", bundle.KIND_FILE),
        ("EB_KIND_SYMLINK", bundle.KIND_SYMLINK),
        ("EB_KIND_END", bundle.KIND_END),
    ]:
        assert ord(define(name).strip("'")) == value, name
    assert string("EB_ENTRY").decode() == bundle.ENTRY


def test_the_launcher_passes_the_variable_the_runtime_reads() -> None:
    assert string("EB_ENV_PAYLOAD_FD").decode() == payload.ENV_PAYLOAD_FD
