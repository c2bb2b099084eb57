"""Targets: the device class a binary is built for (arch, Python, interpreter, glibc floor, budgets).

Targets are TOML files in targets/ (shipped in the wheel) or any path. Architecture synonyms are
defined here and only here.
"""

from __future__ import annotations

import importlib.resources
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .errors import ConfigError, did_you_mean
from .resources import bundled
from .tomlcheck import Table, read_toml

Arch = Literal["x86_64", "aarch64"]
# The backends a target can be built with (pins.toml has a [backends.NAME] table for each). Defined
# here, the lowest layer that knows of backends as data, so that toolchains can name one without
# importing the backends themselves (pyproject.toml's import-linter contracts).
BackendName = Literal["pyinstaller", "nuitka"]
BACKENDS: tuple[BackendName, ...] = ("pyinstaller", "nuitka")

ARCH_SYNONYMS: dict[str, Arch] = {
    "x86_64": "x86_64",
    "amd64": "x86_64",
    "x64": "x86_64",
    "aarch64": "aarch64",
    "arm64": "aarch64",
}

# The name a target file for each arch has, so that ``--target arm64`` and ``--target aarch64`` agree.
DEFAULT_TARGET_FOR_ARCH: dict[Arch, str] = {"x86_64": "x86_64", "aarch64": "arm64"}
# Names bundled targets had before LiteRT's C API became the default: still accepted.
RENAMED_TARGETS: dict[str, str] = {"x86_64-lean": "x86_64", "arm64-lean": "arm64"}


def normalize_arch(name: str) -> Arch | None:
    return ARCH_SYNONYMS.get(name.lower())


def host_arch() -> Arch:
    arch = normalize_arch(platform.machine())
    if arch is None:
        raise ConfigError(
            f"host architecture {platform.machine()!r} is not supported; "
            f"pass --target {' or '.join(DEFAULT_TARGET_FOR_ARCH.values())}"
        )
    return arch


@dataclass(frozen=True, kw_only=True)
class Budgets:
    max_size_mb: float | None = None
    max_startup_ms: float | None = None
    max_rss_mb: float | None = None


@dataclass(frozen=True, kw_only=True)
class DebianPin:
    """A pinned distribution that a Debian build root takes from Debian instead of PyPI
    (``[interpreters.NAME.debian-root.DISTRIBUTION]`` in pins.toml)."""

    distribution: str  # the pip name it stands for: numpy
    package: str  # the Debian package that provides it: python3-numpy
    version: str  # the upstream version that package holds in the root's suite: 1.24.2

    @property
    def requirement(self) -> str:
        return f"{self.distribution}=={self.version}"


@dataclass(frozen=True, kw_only=True)
class Pins:
    """What goes into a build environment for one interpreter (edgebundle/pins.toml)."""

    interpreter: str
    module: str
    distribution: str
    pythons: tuple[str, ...]
    requires: tuple[str, ...]
    # pins a host venv builds from their sdist, with the settings of pins.toml's [build-from-source]
    source_builds: tuple[str, ...] = ()
    debian_root: tuple[DebianPin, ...] = ()  # pins a Debian build root takes from Debian
    # whether binaries carry NumPy (the interpreter packages' Python APIs need it; LiteRT's C API,
    # edgebundle's own binding, does not: its binaries leave NumPy out)
    numpy: bool = True


@dataclass(frozen=True, kw_only=True)
class Target:
    name: str
    path: Path
    description: str
    arch: Arch
    python: str
    interpreter: str
    glibc_floor: str
    budgets: Budgets
    extra_requires: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "arch": self.arch,
            "python": self.python,
            "interpreter": self.interpreter,
            "glibc_floor": self.glibc_floor,
            "budgets": {
                "max_size_mb": self.budgets.max_size_mb,
                "max_startup_ms": self.budgets.max_startup_ms,
                "max_rss_mb": self.budgets.max_rss_mb,
            },
        }


def _pins_table() -> Table:
    resource = importlib.resources.files("edgebundle").joinpath("pins.toml")
    return Table(Path(str(resource)), "", read_toml(Path(str(resource)), "pins"))


def interpreters() -> dict[str, Pins]:
    top = _pins_table()
    table = top.sub("interpreters")
    out = {}
    for name in table.data:
        t = table.sub(name)
        out[name] = Pins(
            interpreter=name,
            module=t.require("module", str),
            distribution=t.require("distribution", str),
            pythons=tuple(t.require("pythons", list)),
            requires=tuple(t.require("requires", list)),
            source_builds=tuple(t.get("build-from-source", list, [])),
            debian_root=_debian_pins(t.sub("debian-root")),
            numpy=t.get("numpy", bool, True),
        )
    return out


def _debian_pins(table: Table) -> tuple[DebianPin, ...]:
    pins = []
    for name in table.data:
        t = table.sub(name)
        t.check_keys(["package", "version"])
        package, version = t.require("package", str), t.require("version", str)
        pins.append(DebianPin(distribution=name, package=package, version=version))
    return tuple(pins)


def common_requires() -> tuple[str, ...]:
    return tuple(_pins_table().sub("common").require("requires", list))


def source_build_settings(name: str) -> list[str]:
    """The pip config settings of ``[build-from-source].NAME`` in pins.toml."""
    settings: list[str] = _pins_table().sub("build-from-source").require(name, list)
    return settings


def root_source_build_packages() -> dict[str, list[str]]:
    """The source builds a Debian build root makes too, each with the Debian packages it needs there
    (``[build-from-source-in-roots]``)."""
    table = _pins_table().sub("build-from-source-in-roots")
    return {name: table.require(name, list) for name in table.data}


def root_parallel_compiles() -> set[str]:
    """The root source builds whose compiles may run side by side (``[build-from-source-in-roots-jobs]``)."""
    table = _pins_table().sub("build-from-source-in-roots-jobs")
    return {name for name in table.data if table.require(name, bool)}


def source_build_needs(name: str) -> str:
    """What building ``name`` from source needs on the host (``[build-from-source-needs]``)."""
    table = _pins_table().sub("build-from-source-needs")
    needs: str = table.get(name, str, "a C compiler and Python headers")
    return needs


def backend_requires(backend: BackendName) -> tuple[str, ...]:
    return tuple(_pins_table().sub("backends").sub(backend).require("requires", list))


def bundled_targets() -> dict[str, Path]:
    return bundled("targets")


def resolve_target_path(name_or_path: str) -> Path:
    """``host``, an arch or its synonym, a bundled target name, or a path to a target file."""
    bundled = bundled_targets()
    if name_or_path == "host":
        return bundled[DEFAULT_TARGET_FOR_ARCH[host_arch()]]
    arch = normalize_arch(name_or_path)
    if arch is not None:
        return bundled[DEFAULT_TARGET_FOR_ARCH[arch]]
    if name_or_path in bundled:
        return bundled[name_or_path]
    if name_or_path in RENAMED_TARGETS:
        return bundled[RENAMED_TARGETS[name_or_path]]
    path = Path(name_or_path)
    if path.suffix == ".toml" or "/" in name_or_path:
        return path
    choices = ["host", *ARCH_SYNONYMS, *bundled]
    raise ConfigError(
        f"unknown target {name_or_path!r}{did_you_mean(name_or_path, choices)}; "
        f"choose host, one of {', '.join(sorted(bundled))}, an arch synonym "
        f"({', '.join(ARCH_SYNONYMS)}) or a path to a target .toml file"
    )


def load_target(name_or_path: str, interpreter_override: str | None = None) -> Target:
    path = resolve_target_path(name_or_path)
    top = Table(path, "", read_toml(path, "target"))
    top.check_keys(["description", "arch", "python", "interpreter", "glibc_floor", "budgets", "requires"])
    arch_name = top.require("arch", str)
    arch = normalize_arch(arch_name)
    if arch is None:
        raise top.error(
            "arch",
            f"unknown architecture {arch_name!r}{did_you_mean(arch_name, ARCH_SYNONYMS)}; "
            f"expected one of {', '.join(ARCH_SYNONYMS)}",
        )
    known = interpreters()
    interpreter = interpreter_override or top.require("interpreter", str)
    if interpreter not in known:
        hint = did_you_mean(interpreter, known)
        message = f"unknown interpreter {interpreter!r}{hint}; expected one of {', '.join(known)}"
        if interpreter_override:
            raise ConfigError(f"--interpreter: {message}")
        raise top.error("interpreter", message)
    python = top.require("python", str)
    if python not in known[interpreter].pythons:
        raise top.error(
            "python",
            f"{interpreter} has no wheels for Python {python}; "
            f"use one of {', '.join(known[interpreter].pythons)}",
        )
    glibc_floor = top.require("glibc_floor", str)
    if not _is_version(glibc_floor):
        raise top.error("glibc_floor", f"expected a version like '2.31', got {glibc_floor!r}")
    b = top.sub("budgets")
    b.check_keys(["max_size_mb", "max_startup_ms", "max_rss_mb"])
    budgets = Budgets(
        max_size_mb=_positive(b, "max_size_mb"),
        max_startup_ms=_positive(b, "max_startup_ms"),
        max_rss_mb=_positive(b, "max_rss_mb"),
    )
    extra = top.get("requires", list, [])
    if not all(isinstance(r, str) for r in extra):
        raise top.error("requires", "expected a list of pip requirement strings")
    return Target(
        name=path.stem,
        path=path,
        description=top.get("description", str, ""),
        arch=arch,
        python=python,
        interpreter=interpreter,
        glibc_floor=glibc_floor,
        budgets=budgets,
        extra_requires=tuple(extra),
    )


def _positive(table: Table, key: str) -> float | None:
    value = table.optional(key, float)
    if value is not None and value <= 0:
        raise table.error(key, f"must be positive, got {value}")
    return value


def _is_version(text: str) -> bool:
    parts = text.split(".")
    return len(parts) == 2 and all(p.isdigit() for p in parts)
