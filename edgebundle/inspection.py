"""``edgebundle inspect``: what is inside a binary or a model, without running either.

For a binary: the embedded manifest, the architecture, the size by component, the glibc floor (the
highest GLIBC_x.y symbol version needed by the launcher and every bundled shared library, naming the
library that sets it), and whether the model bytes still match the manifest's sha256. Everything is
read from the file (trailer, app payload, the zstd runner archive), so it works for any architecture.
For a .tflite model: tensors, quantization, ops (read by our own FlatBuffer reader).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .backends.bundle import ARCHIVE_MAGIC, KIND_END, KIND_FILE, RECORD, Trailer, read_app_files, read_trailer
from .backends.libc import LIBDIR
from .elf import ElfInfo, NotElfError, parse_elf, read_elf
from .errors import ConfigError, IntegrityError
from .proc import TIMEOUT_S, pipe
from .runtime.manifest import Manifest
from .tflite import TFLiteFormatError, read_model

# Where a bundled file's bytes count, by the first matching path fragment.
COMPONENTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("libc", (f"{LIBDIR}/",)),  # the C library a runner carries (backends/libc.py)
    ("runtime", ("ebrt",)),
    # the C++ runtime is there for the interpreter (TFLite is C++)
    ("interpreter", ("tflite_runtime", "ai_edge_litert", "libstdc++", "libgcc_s")),
    ("numpy", ("numpy",)),
    ("pillow", ("PIL", "pillow")),
    ("python", ("libpython", "lib-dynload", "base_library.zip", "python3")),
)


@dataclass(frozen=True)
class Member:
    path: str
    size: int
    data: bytes


def runner_members(binary: Path, trailer: Trailer) -> Iterator[Member]:
    """The files of the runner archive (decompressed with the zstd tool)."""
    with open(binary, "rb") as f:
        f.seek(trailer.runner_offset)
        runner = f.read(trailer.runner_size)  # its zstd frames
    proc = pipe(
        ["zstd", "-d", "-c", "-q"],
        runner,
        what="decompressing the runner archive",
        timeout=TIMEOUT_S["quick"],
        error=ConfigError,
    )
    if proc.returncode != 0:
        raise ConfigError(f"{binary}: the runner archive is damaged ({proc.stderr.decode().strip()})")
    data = proc.stdout
    if not data.startswith(ARCHIVE_MAGIC):
        raise ConfigError(f"{binary}: the runner archive is damaged (bad magic)")
    pos = len(ARCHIVE_MAGIC)
    while pos + RECORD.size <= len(data):
        kind, _mode, path_len, data_len = RECORD.unpack_from(data, pos)
        pos += RECORD.size
        if kind == KIND_END:
            return
        path = data[pos : pos + path_len].decode("utf-8", "replace")
        pos += path_len
        if kind == KIND_FILE:
            yield Member(path=path, size=data_len, data=data[pos : pos + data_len])
        pos += data_len
    raise ConfigError(f"{binary}: the runner archive is truncated")


def component(path: str) -> str:
    for name, fragments in COMPONENTS:
        if any(fragment in path for fragment in fragments):
            return name
    return "python" if path.endswith(".pyc") else "other"  # the rest of the .pyc is the stdlib


def inspect_binary(path: Path) -> dict[str, Any]:
    try:
        elf = read_elf(path)
    except NotElfError as exc:
        raise ConfigError(f"{exc}; edgebundle inspect takes a built binary or a .tflite model") from None
    try:
        trailer = read_trailer(path)
        files = read_app_files(path)
        manifest: Manifest = json.loads(files["manifest.json"])
    except (ValueError, KeyError, OSError) as exc:
        raise ConfigError(f"{path}: not an edgebundle binary, or a truncated one ({exc})") from None
    size = path.stat().st_size
    model_name = manifest["model"]["file"]
    model_bytes = files.get(model_name, b"")
    model_sha = hashlib.sha256(model_bytes).hexdigest()

    sizes = {"launcher": trailer.runner_offset, "model": len(model_bytes)}
    unpacked: dict[str, int] = {}
    libraries: list[dict[str, Any]] = []
    floor: tuple[tuple[int, int], str] | None = None
    bundled_libc: ElfInfo | None = None
    launcher_floor = _floor_of(path.read_bytes()[: trailer.runner_offset], "launcher")
    if launcher_floor:
        floor = (launcher_floor, "launcher")
    for member in runner_members(path, trailer):
        part = component(member.path)
        unpacked[part] = unpacked.get(part, 0) + member.size
        if member.path == f"{LIBDIR}/libc.so.6":
            bundled_libc = parse_elf(member.data, Path(member.path))
        # the bundled C library's own files define the versions the rest needs
        member_floor = None if part == "libc" else _floor_of(member.data, member.path)
        if member_floor is not None or member.path.endswith(".so") or ".so." in member.path:
            libraries.append(
                {
                    "path": member.path,
                    "size": member.size,
                    "sha256": hashlib.sha256(member.data).hexdigest(),
                    "glibc": ".".join(map(str, member_floor)) if member_floor else None,
                }
            )
        if member_floor and (floor is None or member_floor > floor[0]):
            floor = (member_floor, member.path)
    # The compressed runner is split over components by their share of the unpacked bytes.
    total_unpacked = sum(unpacked.values()) or 1
    for part, count in unpacked.items():
        sizes[part] = sizes.get(part, 0) + round(trailer.runner_size * count / total_unpacked)
    sizes["other"] = sizes.get("other", 0) + (
        size - trailer.runner_offset - trailer.runner_size - len(model_bytes)
    )
    target_floor = manifest.get("target", {}).get("glibc_floor")
    libc: dict[str, Any] = {"mode": "system", "glibc_floor": ".".join(map(str, floor[0])) if floor else None}
    if bundled_libc is not None and bundled_libc.glibc_version and bundled_libc.kernel_floor:
        libc = {
            "mode": "bundled",
            "glibc": ".".join(map(str, bundled_libc.glibc_version)),
            "kernel_floor": ".".join(map(str, bundled_libc.kernel_floor)),
        }
    return {
        "kind": "binary",
        "path": str(path),
        "arch": elf.arch,
        "size_bytes": size,
        "size_by_component": dict(sorted(sizes.items(), key=lambda kv: -kv[1])),
        "unpacked_bytes": unpacked,
        "glibc_floor": ".".join(map(str, floor[0])) if floor else None,
        "glibc_floor_set_by": floor[1] if floor else None,
        "target_glibc_floor": target_floor,
        "libc": libc,
        "model_sha256": model_sha,
        "model_sha256_matches_manifest": model_sha == manifest["model"]["sha256"],
        "libraries": libraries,
        "manifest": manifest,
    }


def _floor_of(data: bytes, name: str) -> tuple[int, int] | None:
    if not data.startswith(b"\x7fELF"):
        return None
    try:
        return parse_elf(data, Path(name)).glibc_floor
    except NotElfError:
        return None


def inspect_model(path: Path) -> dict[str, Any]:
    try:
        info = read_model(path)
    except TFLiteFormatError as exc:
        raise ConfigError(str(exc)) from None
    data = path.read_bytes()
    return {
        "kind": "model",
        "path": str(path),
        "size_bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        **info.to_json(),
    }


def inspect_path(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    with open(path, "rb") as f:
        head = f.read(8)
    if head[4:8] == b"TFL3":
        return inspect_model(path)
    return inspect_binary(path)


def check_integrity(report: dict[str, Any]) -> None:
    """Raise when a binary's model bytes do not match its manifest (the report shows which digest)."""
    if report["kind"] == "binary" and not report["model_sha256_matches_manifest"]:
        raise IntegrityError(
            f"{report['path']}: the model's sha256 does not match the manifest "
            "(the binary was tampered with or damaged)"
        )


def format_report(report: dict[str, Any]) -> str:
    """The human-readable form of an inspect report."""
    lines = [f"{report['path']}: {report['kind']}, {report['size_bytes']:,} bytes"]
    if report["kind"] == "model":
        for role in ("inputs", "outputs"):
            for t in report[role]:
                quant = f" scale={t['scale'][0]:.6g} zero_point={t['zero_point'][0]}" if t["scale"] else ""
                lines.append(f"  {role[:-1]:6} {t['name']}: {t['dtype']}{t['shape']}{quant}")
        lines.append(f"  ops    {', '.join(report['ops'])}")
        if report["custom_ops"]:
            lines.append(f"  custom ops (need a runtime that has them): {', '.join(report['custom_ops'])}")
        return "\n".join(lines)
    m = report["manifest"]
    lines.append(
        f"  arch {report['arch']}, target {m['target']['name']}, backend {m['backend']}, "
        f"{m['interpreter']['name']} {m['interpreter']['version']}, Python {m['python']}"
    )
    match = "matches" if report["model_sha256_matches_manifest"] else "DOES NOT MATCH the manifest"
    lines.append(
        f"  model  {m['model'].get('source_name', m['model']['file'])} "
        f"sha256 {report['model_sha256']} ({match})"
    )
    lines.append("  " + libc_line(report))
    lines.append("  size by component:")
    for part, count in report["size_by_component"].items():
        lines.append(f"    {part:12} {count / 1e6:7.2f} MB")
    return "\n".join(lines)


def libc_line(report: dict[str, Any]) -> str:
    """What the binary needs of the device's C library, in one line (inspect, build, device tests)."""
    libc = report["libc"]
    if libc["mode"] == "bundled":
        return (
            f"C library: bundled glibc {libc['glibc']} (Linux >= {libc['kernel_floor']}; the device needs "
            "no C library)"
        )
    return (
        f"C library: system glibc >= {report['glibc_floor']} (set by {report['glibc_floor_set_by']}; "
        f"target floor {report['target_glibc_floor']})"
    )
