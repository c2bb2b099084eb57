"""Runners: everything in a binary that does not depend on the model, built once and cached.

A runner is the launcher (edgebundle/launcher) followed by the zstd frames of a backend's one-folder
program (Python, NumPy, Pillow, the interpreter, the runtime). It depends on the target's arch and
Python, the pins, the backend and the sources of the runtime, launcher and backend, and on nothing
else: so it is cached under ``cache_dir()/runners`` by the hash of exactly those, and a build with
another model or recipe only appends that model's payload to the cached runner (no backend run).

On the device, the launcher unpacks the folder once per content hash (the runner's ``key``) into a
per-user cache and execs it; see launcher.c. By default the folder carries its own C library
(libc.py), so the device needs none; ``--system-libc`` leaves it out.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import __version__, workspace
from ..elf import GLIBC_ABI_MARKERS, version_key
from ..errors import BuildError
from ..proc import TIMEOUT_S, Echo, run
from ..runtime.payload import FORMAT_VERSION
from ..target import BackendName, Pins, Target
from ..toolchains import (
    Toolchain,
    cache_dir,
    content_key,
    create_cached,
    is_complete,
    lock_path,
    log_path,
    requirements,
)
from ..ui import progress_of
from . import BACKENDS, RUNTIME_SRC, Stage, bundle, launcher, libc, stage_runtime
from .libc import LibcMode

LAYOUT_VERSION = "4"  # bump when the way runners are made changes
KEEP_RUNNERS = 16  # in the builder's cache: ~8-22 MB each; every target x backend x C library mode of a
# host fits (the test suite uses more than 8: with 8, each run rebuilt some, arm64 ones under QEMU)
# zstd level: 19 is the highest without --ultra. Decompression runs at ~1 GB/s whatever the level,
# so only the build pays. Its window is what unpacking holds in memory per frame on the device's
# first run: 19's own 8 MB made a first run's peak the launcher's (lean digits: 25.9 MB against
# 22.7 MB for the program itself); a 2 MB window costs ~1.8% more bytes.
ZSTD_LEVEL = 19
ZSTD_WINDOW_LOG = 21
# The files are compressed as this many frames of about equal size, which the launcher unpacks on as
# many threads as the device has cores (zstd decompresses one frame on one core). Measured on a
# 2-core x86_64 (benchmarks/results/cold.md): two frames cut a first start by ~20-25% for 8 kB more;
# four were no faster there and cost 1.2% more bytes.
FILE_FRAMES = 2
_BACKENDS_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True, kw_only=True)
class Runner:
    """A cached runner: ``prefix`` = launcher + compressed folder, ready for a payload to follow."""

    path: Path
    key: str
    runner_offset: int
    compressed_bytes: int
    unpacked_bytes: int
    files: int
    launcher_bytes: int
    libc: dict[
        str, Any
    ]  # {"mode": "bundled", "glibc": "2.36", "kernel_floor": "3.2.0", ...} | {"mode": "system"}

    @property
    def prefix(self) -> Path:
        return self.path / "prefix.bin"

    def describe(self) -> str:
        libc = (
            f"glibc {self.libc['glibc']} bundled" if self.libc["mode"] == "bundled" else "the device's glibc"
        )
        return (
            f"runner {self.key}: {self.prefix.stat().st_size / 1e6:.1f} MB "
            f"(launcher {self.launcher_bytes / 1e3:.0f} kB + {self.unpacked_bytes / 1e6:.1f} MB in "
            f"{self.files} files, zstd to {self.compressed_bytes / 1e6:.1f} MB; {libc})"
        )


# The modules every backend's runner is made with; each backend adds its own (its SOURCES).
COMMON_SOURCES = ("__init__.py", "bundle.py", "launcher.py", "libc.py", "runners.py")


def sources_digest(backend: BackendName) -> str:
    """The hash of every source file whose change changes ``backend``'s runners: the runtime, the
    launcher, the common backend modules and the files that backend lists (another backend's do not:
    a Nuitka change leaves the PyInstaller runners cached)."""
    h = hashlib.sha256()
    paths = [
        *sorted(RUNTIME_SRC.glob("*.py")),
        *(launcher.SOURCE_DIR / name for name in launcher.SOURCES),
    ]
    for name in (*COMMON_SOURCES, *BACKENDS[backend].SOURCES):
        path = _BACKENDS_DIR / name
        if path.is_dir():
            paths += sorted(p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
        else:
            paths.append(path)
    for path in paths:  # named with its folder (runtime/app.py), never where the checkout is
        h.update(str(path.relative_to(path.parents[1])).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def runner_inputs(
    toolchain: Toolchain, target: Target, backend: BackendName, pins: Pins, libc_mode: LibcMode
) -> dict[str, Any]:
    """What a runner is made of, in full: its cache key is the hash of this."""
    return {
        "layout": LAYOUT_VERSION,
        "format": FORMAT_VERSION,
        "edgebundle": __version__,
        "toolchain": toolchain.describe(),
        "arch": target.arch,
        "python": target.python,
        "glibc_floor": target.glibc_floor,
        "interpreter": target.interpreter,
        "module": pins.module,
        "backend": backend,
        "libc": libc_mode,
        "requires": requirements(target, backend),
        "sources": sources_digest(backend),
    }


def runner_path(target: Target, backend: BackendName, inputs: dict[str, Any]) -> Path:
    return cache_dir() / "runners" / f"{target.name}-{backend}-{content_key(inputs)}"


def load(path: Path) -> Runner:
    data = json.loads((path / "runner.json").read_text())
    return Runner(
        path=path,
        key=str(data["key"]),
        runner_offset=int(data["runner_offset"]),
        compressed_bytes=int(data["compressed_bytes"]),
        unpacked_bytes=int(data["unpacked_bytes"]),
        files=int(data["files"]),
        launcher_bytes=int(data["launcher_bytes"]),
        libc=dict(data.get("libc") or {"mode": "system"}),
    )


def ensure_runner(
    toolchain: Toolchain,
    target: Target,
    backend: BackendName,
    pins: Pins,
    echo: Echo,
    *,
    libc_mode: LibcMode = "bundled",
    keep_build_dir: bool = False,
) -> tuple[Runner, bool]:
    """The cached runner for these inputs, built first when there is none. (runner, whether built)."""
    inputs = runner_inputs(toolchain, target, backend, pins, libc_mode)
    path = runner_path(target, backend, inputs)
    if is_complete(path):
        os.utime(path / "runner.json")  # recently used: pruned last
        return load(path), False

    def make(tmp: Path, log: Path) -> None:
        tmp.mkdir(parents=True)
        _make_runner(
            tmp,
            log,
            toolchain,
            target,
            backend,
            pins,
            echo,
            libc_mode=libc_mode,
            keep_build_dir=keep_build_dir,
        )

    create_cached(path, echo=echo, what="runner", make=make, metadata=inputs)
    prune(path.parent, KEEP_RUNNERS, echo)
    return load(path), True


def prune(folder: Path, keep: int, echo: Echo) -> None:
    """Remove all but the ``keep`` most recently used runners (every change of the runtime's sources
    makes a new one; ~10 MB each). A runner whose lock another build holds is left alone."""
    runners = sorted(
        (p for p in folder.iterdir() if not p.name.startswith(".") and is_complete(p)),
        key=lambda p: (p / "runner.json").stat().st_mtime,
        reverse=True,
    )
    for old in runners[keep:]:
        with open(lock_path(old), "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue
            echo(f"removing runner {old} (only the {keep} most recently used are kept)")
            shutil.rmtree(old, ignore_errors=True)
            log_path(old).unlink(missing_ok=True)
            lock_path(old).unlink(missing_ok=True)


# binutils 2.40's strip breaks the OpenBLAS that NumPy 2's PyPI wheels bundle (libscipy_openblas: "ELF
# load command address/offset not page-aligned" when the binary loads it). NumPy built from source
# without BLAS (host venvs) or Debian's (build roots) has none; a root of an interpreter whose NumPy
# Debian lacks (NumPy 2 for LiteRT) gets the wheel, and then nothing is stripped.
OPENBLAS_PROBE = (
    "import importlib.metadata as m; print(any('scipy_openblas' in str(f) for f in m.files('numpy') or ()))"
)


def _numpy_bundles_openblas(toolchain: Toolchain, log: Path) -> bool:
    out = toolchain.run(
        [toolchain.python, "-c", OPENBLAS_PROBE],
        log=log,
        what="checking the environment's NumPy for OpenBLAS",
        timeout=TIMEOUT_S["model probe"],  # a Python start, under QEMU for a foreign root
    )
    return out.strip().splitlines()[-1:] == ["True"]


def compress_runner(folder: Path, out: Path, log: Path, echo: Echo, file_frames: int = FILE_FRAMES) -> int:
    """Write ``folder`` to ``out`` as the runner: one zstd frame per part of ``bundle.runner_frames``,
    one after the other. Returns the bytes its files hold."""
    unpacked = 0
    with open(out, "wb") as joined:
        for i, entries in enumerate(frames := bundle.runner_frames(folder, file_frames)):
            part = out.with_name(f"{out.name}.{i}")
            with open(part, "wb") as f:
                unpacked += bundle.write_archive_part(entries, f, first=i == 0, last=i == len(frames) - 1)
            run(
                [
                    *("zstd", f"-{ZSTD_LEVEL}", f"--zstd=wlog={ZSTD_WINDOW_LOG}", "--check", "-q", "-f"),
                    *("--rm", "-o", f"{part}.zst", str(part)),
                ],
                log=log,
                echo=echo,
                what="compressing the runner",
                timeout=TIMEOUT_S["compile"],  # zstd -19 of ~30 MB: seconds
            )
            with open(f"{part}.zst", "rb") as src:
                shutil.copyfileobj(src, joined)
            os.unlink(f"{part}.zst")
    return unpacked


def _make_runner(
    out: Path,
    log: Path,
    toolchain: Toolchain,
    target: Target,
    backend_name: BackendName,
    pins: Pins,
    echo: Echo,
    *,
    libc_mode: LibcMode,
    keep_build_dir: bool,
) -> None:
    backend = BACKENDS[backend_name]
    # A fixed path per runner (paths end up in the frozen code), private to this user.
    name = f"runner-{out.name.strip('.').removesuffix('.partial')}"
    with workspace.scratch(name, keep=keep_build_dir) as workdir:
        if keep_build_dir:
            echo(f"runner build directory kept: {workdir}")
        strip = not _numpy_bundles_openblas(toolchain, log)
        if not strip:
            echo("not stripping: this environment's NumPy wheel bundles an OpenBLAS that strip breaks")
        stage = Stage(
            workdir=workdir,
            name=bundle.ENTRY,
            interpreter_module=pins.module,
            numpy=pins.numpy,
            strip=strip,
            pack_relocations=version_key(target.glibc_floor) >= GLIBC_ABI_MARKERS["GLIBC_ABI_DT_RELR"],
        )
        stage_runtime(stage)
        backend.prepare(stage)
        echo(f"building the runner with {backend_name} (first build for these pins and sources; log: {log})")
        toolchain.run(
            backend.command(toolchain.python, stage),
            log=log,
            what=backend_name,
            timeout=TIMEOUT_S["backend build"],
            cwd=workdir,
            on_line=backend.progress(stage, progress_of(echo)),
        )
        folder = backend.result(stage)
        if not (folder / bundle.ENTRY).is_file():
            raise BuildError(f"{backend_name} reported success but wrote no {folder / bundle.ENTRY}")
        backend.finish(folder)
        libc_info: dict[str, Any] = {"mode": libc_mode}
        if libc_mode == "bundled":
            libc_info |= libc.bundle(toolchain, folder, bundle.ENTRY, target.arch, log).to_json()
        files = sum(1 for kind, _, _ in bundle.tree_entries(folder) if kind == bundle.KIND_FILE)
        compressed = workdir / "runner.ebr.zst"
        unpacked = compress_runner(folder, compressed, log, echo)
        exe = launcher.build(toolchain, workdir, log, target.arch)
        launcher_bytes = exe.stat().st_size
        with open(out / "prefix.bin", "wb") as f:
            for part in (exe, compressed):
                with open(part, "rb") as src:
                    shutil.copyfileobj(src, f)
        packed = compressed.read_bytes()
        runner = {
            "key": bundle.runner_key(packed),
            "runner_offset": launcher_bytes,
            "compressed_bytes": len(packed),
            "unpacked_bytes": unpacked,
            "files": files,
            "launcher_bytes": launcher_bytes,
            "libc": libc_info,
        }
        (out / "runner.json").write_text(json.dumps(runner, indent=1, sort_keys=True) + "\n")
