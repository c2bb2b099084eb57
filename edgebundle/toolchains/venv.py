"""A build environment on the host: a virtual environment with the target's Python and exactly the
pinned interpreter, NumPy, Pillow and backend, cached by the hash of its contents.

Keeping builds out of the user's own environment means the binary contains only what the pins say
(never the builder, Click, or whatever else happens to be installed), and lets tflite-runtime (NumPy 1)
and ai-edge-litert (NumPy 2) targets be built from the same edgebundle installation.

A pin listed in ``build-from-source`` of ``[interpreters.NAME]`` in pins.toml is built from its sdist
with the config settings of its ``[build-from-source]`` table (NumPy without OpenBLAS: 35 MB less to
bundle), once per host: the wheel is cached under ``cache_dir()/wheels`` by the hash of what it is
built from.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

from ..errors import BuildError, ConfigError, ToolMissingError
from ..proc import TIMEOUT_S, Echo, LineHandler, counted_progress, run, stream, which
from ..target import BackendName, Target, interpreters, source_build_needs, source_build_settings
from ..ui import progress_of
from . import (
    Invocation,
    cache_dir,
    content_key,
    create_cached,
    is_complete,
    pip_install,
    pip_install_argv,
    pip_wheel_argv,
    reproducible_env,
)
from . import requirements as pinned_requirements

LAYOUT_VERSION = "1"  # bump when the way environments are made changes


def source_builds(interpreter: str) -> dict[str, list[str]]:
    """Distribution -> pip config settings, for the pins an interpreter builds from source."""
    return {name: source_build_settings(name) for name in interpreters()[interpreter].source_builds}


def pinned_version(requires: list[str], name: str) -> str:
    for req in requires:
        if req.startswith(f"{name}=="):
            return req.split("==", 1)[1]
    raise ConfigError(f"pins.toml: {name} is to be built from source but has no {name}==VERSION pin")


class HostVenv:
    def __init__(self, target: Target, backend: BackendName) -> None:
        self.target = target
        self.backend = backend
        self.requires = pinned_requirements(target, backend)
        self.source_builds = source_builds(target.interpreter)
        digest = content_key(LAYOUT_VERSION, target.python, self.requires, self.source_builds)
        name = f"{target.interpreter}-{backend}-py{target.python}-{digest}"
        self.path = cache_dir() / "envs" / name

    @property
    def python(self) -> str:
        return str(self.path / "bin" / "python")

    @property
    def library_root(self) -> Path | None:
        return None

    def describe(self) -> str:
        return f"host venv {self.path}"

    def exists(self) -> bool:
        return is_complete(self.path)

    def ensure(self, echo: Echo) -> None:
        if self.exists():
            return
        base_python = self._base_python()

        def make(tmp: Path, log: Path) -> None:
            run(
                [base_python, "-m", "venv", str(tmp)],
                log=log,
                echo=echo,
                what="creating the build venv",
                timeout=TIMEOUT_S["pip install"],  # venv runs ensurepip
                error=ToolMissingError,
            )
            python = str(tmp / "bin" / "python")
            wheels = [
                self._source_wheel(python, name, settings, echo)
                for name, settings in self.source_builds.items()
            ]
            pip_install(
                self.target,
                self.target.arch,
                lambda: run(
                    pip_install_argv(python, [*map(str, wheels), *self.requires]),
                    log=log,
                    echo=echo,
                    what="pip install into the build venv",
                    timeout=TIMEOUT_S["pip install"],
                    error=ToolMissingError,
                ),
            )

        create_cached(
            self.path,
            echo=echo,
            what="build environment",
            make=make,
            metadata={
                "kind": "venv",
                "python": self.target.python,
                "requires": self.requires,
                "source_builds": self.source_builds,
            },
        )

    def _source_wheel(self, python: str, name: str, settings: list[str], echo: Echo) -> Path:
        """A wheel of the pinned ``name`` built from its sdist with ``settings`` (cached)."""
        version = pinned_version(self.requires, name)
        key = content_key(name, version, self.target.python, platform.machine(), settings)
        path = cache_dir() / "wheels" / f"{name}-{version}-py{self.target.python}-{key}"

        def make(tmp: Path, log: Path) -> None:
            run(
                # --verbose: the build's [N/M] steps, for progress (counted_progress)
                [*pip_wheel_argv(python, name, version, settings, str(tmp)), "--verbose"],
                log=log,
                echo=echo,
                what=f"building {name} {version} from source (once; needs {source_build_needs(name)})",
                timeout=TIMEOUT_S["source build"],
                error=ToolMissingError,
                on_line=counted_progress(f"building {name} {version}", progress_of(echo)),
            )

        create_cached(
            path,
            echo=echo,
            what=f"{name} {version} wheel",
            make=make,
            metadata={"name": name, "version": version, "settings": settings},
        )
        found = sorted(path.glob("*.whl"))
        if len(found) != 1:
            raise BuildError(f"{path}: expected one wheel, found {len(found)}")
        return found[0]

    def invocation(self, argv: list[str], *, cwd: Path | None = None) -> Invocation:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
        env["PATH"] = f"{self.path / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        env.update(reproducible_env())
        return Invocation(argv=list(argv), env=env, cwd=cwd)

    def run(
        self,
        argv: list[str],
        *,
        log: Path | None,
        what: str,
        timeout: float,
        cwd: Path | None = None,
        on_line: LineHandler | None = None,
    ) -> str:
        inv = self.invocation(argv, cwd=cwd)
        return run(inv.argv, log=log, env=inv.env, cwd=inv.cwd, what=what, timeout=timeout, on_line=on_line)

    def _base_python(self) -> str:
        wanted = self.target.python
        exe = which(f"python{wanted}")
        out = stream(
            [exe, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            echo=None,
            what=f"python{wanted} --version",
            timeout=TIMEOUT_S["quick"],
            error=ToolMissingError,
        ).stdout.strip()
        if out != wanted:
            raise ToolMissingError(
                f"python{wanted} on PATH is Python {out or '(unusable)'}; install Python {wanted}"
            )
        return exe
