"""BuildPlan = recipe x target x backend x command-line overrides: everything a build needs, resolved
before anything runs, and printed so the user sees what will happen.

It sits in the build layer, beside build.py, its only consumer: backends and toolchains never see a
plan, they receive its pieces (a Target, a BackendName, the Debian packages to install) as data."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from . import outputs
from .backends.libc import LibcMode
from .errors import ConfigError
from .recipe import Recipe
from .target import BACKENDS, Arch, BackendName, Target, host_arch

# Backends that compile C for the target: under QEMU that takes far too long (an arm64 Nuitka build
# was still compiling after 30 min on a 2-core x86_64), so they build on a host of the target's arch.
NATIVE_ONLY: frozenset[BackendName] = frozenset({"nuitka"})
# The CI machines (GitHub-hosted "runners", not the cached frozen program of backends/runners.py) that
# build each arch natively (.github/workflows/ci.yml runs the matrix).
CI_RUNNERS: dict[Arch, str] = {"x86_64": "ubuntu-24.04", "aarch64": "ubuntu-24.04-arm"}


@dataclass(frozen=True, kw_only=True)
class BuildPlan:
    model: Path
    recipe: Recipe
    target: Target
    backend: BackendName
    output: Path
    keep_build_dir: bool = False
    # Build inside a Debian root even when the target's arch is the host's (edgebundle/toolchains).
    isolated: bool = False
    # "bundled": the binary carries its build environment's glibc and needs none on the device;
    # "system" (--system-libc): it uses the device's, at least the target's glibc_floor.
    libc: LibcMode = "bundled"

    @property
    def name(self) -> str:
        return self.output.name

    @property
    def inputs(self) -> list[Path]:
        """The files this build reads, which no output of it may overwrite."""
        labels = self.recipe.output.labels
        return [self.model, self.recipe.path, *([labels] if labels else [])]

    @property
    def native(self) -> bool:
        """True when the binary can run on this host without emulation."""
        return self.target.arch == host_arch()

    @property
    def build_env(self) -> str:
        """Where the build runs, in words (buildenv.for_plan makes the same choice)."""
        if not self.native:
            return f"emulated {self.target.arch} Debian root (QEMU user mode)"
        if self.isolated:
            return f"isolated {self.target.arch} Debian root (--isolated)"
        return "managed venv on this host"

    @property
    def libc_text(self) -> str:
        if self.libc == "bundled":
            return "bundled (the device needs none; --system-libc to use the device's)"
        return f"the device's glibc >= {self.target.glibc_floor} (--system-libc)"

    def headline(self) -> str:
        """The plan in one line (summary() is the whole of it)."""
        t = self.target
        return (
            f"building {self.output} from {self.model.name} with recipe {self.recipe.name}: "
            f"{t.name} ({t.interpreter}), {self.backend}, {self.build_env}"
        )

    def summary(self) -> str:
        t = self.target
        lines = [
            f"model:       {self.model}",
            f"recipe:      {self.recipe.path} ({self.recipe.name})",
            f"target:      {t.name} ({t.arch}, Python {t.python}, {t.interpreter})",
            f"C library:   {self.libc_text}",
            f"backend:     {self.backend}",
            f"build in:    {self.build_env}",
            f"output:      {self.output}",
        ]
        if self.recipe.output.labels:
            lines.insert(2, f"labels:      {self.recipe.output.labels}")
        return "\n".join(lines)


def backend_name(value: str) -> BackendName:
    """``value`` (as typed after --backend) as one of BACKENDS, or a ConfigError."""
    for name in BACKENDS:
        if value == name:
            return name
    raise ConfigError(f"--backend: unknown backend {value!r}; choose {', '.join(BACKENDS)}")


def check_backend(backend: str) -> None:
    """ConfigError unless ``backend`` is one of BACKENDS (for --backend of every command)."""
    backend_name(backend)


def check_native(backend: str, target: Target) -> None:
    """ConfigError when ``backend`` would have to compile C under emulation for ``target``."""
    if backend in NATIVE_ONLY and target.arch != host_arch():
        raise ConfigError(
            f"--backend {backend} --target {target.name}: {backend} builds for {target.arch} need a native "
            f"{target.arch} host or CI runner ({CI_RUNNERS[target.arch]}); compiling C under QEMU "
            f"here takes 30+ min (or use --backend pyinstaller)"
        )


def make_plan(
    *,
    model: Path,
    recipe: Recipe,
    target: Target,
    backend: str,
    output: Path | None,
    keep_build_dir: bool = False,
    isolated: bool = False,
    libc: LibcMode = "bundled",
) -> BuildPlan:
    name = backend_name(backend)
    check_native(name, target)
    if not model.is_file():
        raise ConfigError(f"{model}: model file not found")
    if output is None:
        output = Path("dist") / model.stem
    plan = BuildPlan(
        model=model,
        recipe=recipe,
        target=target,
        backend=name,
        output=output,
        keep_build_dir=keep_build_dir,
        isolated=isolated,
        libc=libc,
    )
    outputs.check(plan.output, "-o", inputs=plan.inputs)
    return plan


def ci_matrix(targets: list[Target], backends: tuple[str, ...] = BACKENDS) -> dict[str, list[dict[str, str]]]:
    """The GitHub Actions build matrix: one native job per target x backend (``fromJSON`` of what
    ``edgebundle matrix`` prints), so adding a target file adds a CI job. Every job runs on a runner of
    its target's arch: that is what NATIVE_ONLY backends need (the emulated cross job is separate and
    PyInstaller's alone)."""
    return {
        "include": [
            {
                "name": f"{t.name}-{backend}",
                "target": t.name,
                "arch": t.arch,
                "backend": backend,
                "runner": CI_RUNNERS[t.arch],
            }
            for t in sorted(targets, key=lambda t: t.name)
            for backend in backends
        ]
    }
