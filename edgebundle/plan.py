"""BuildPlan = recipe x target x backend x command-line overrides: everything a build needs, resolved
before anything runs, and printed so the user sees what will happen."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .errors import ConfigError
from .recipe import Recipe
from .target import Target, host_arch

BackendName = Literal["pyinstaller"]
BACKENDS: tuple[BackendName, ...] = ("pyinstaller",)


@dataclass(frozen=True, kw_only=True)
class BuildPlan:
    model: Path
    recipe: Recipe
    target: Target
    backend: BackendName
    output: Path
    keep_build_dir: bool = False

    @property
    def name(self) -> str:
        return self.output.name

    @property
    def native(self) -> bool:
        """True when the binary can run on this host without emulation."""
        return self.target.arch == host_arch()

    def summary(self) -> str:
        t = self.target
        lines = [
            f"model:       {self.model}",
            f"recipe:      {self.recipe.path} ({self.recipe.name})",
            f"target:      {t.name} ({t.arch}, Python {t.python}, {t.interpreter}, glibc >= {t.glibc_floor})",
            f"backend:     {self.backend}",
            f"output:      {self.output}",
        ]
        if self.recipe.output.labels:
            lines.insert(2, f"labels:      {self.recipe.output.labels}")
        return "\n".join(lines)


def make_plan(
    *,
    model: Path,
    recipe: Recipe,
    target: Target,
    backend: str,
    output: Path | None,
    keep_build_dir: bool = False,
) -> BuildPlan:
    if backend not in BACKENDS:
        raise ConfigError(f"--backend: unknown backend {backend!r}; choose {', '.join(BACKENDS)}")
    if not model.is_file():
        raise ConfigError(f"{model}: model file not found")
    if output is None:
        output = Path("dist") / model.stem
    if output.is_dir():
        raise ConfigError(f"{output}: -o is a directory; give the binary's file name")
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{output.parent}: cannot create the output directory: {exc.strerror}") from None
    return BuildPlan(
        model=model,
        recipe=recipe,
        target=target,
        backend=backend,  # type: ignore[arg-type,unused-ignore]
        output=output,
        keep_build_dir=keep_build_dir,
    )
