"""A build environment on the host: a virtual environment with the target's Python and exactly the
pinned interpreter, NumPy, Pillow and backend, cached by the hash of its contents.

Keeping builds out of the user's own environment means the binary contains only what the pins say
(never the builder, Click, or whatever else happens to be installed), and lets tflite-runtime (NumPy 1)
and ai-edge-litert (NumPy 2) targets be built from the same edgebundle installation.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

from ..errors import ToolMissingError
from ..runner import Echo, run, which
from ..target import Target, backend_requires, common_requires, interpreters
from . import cache_dir

LAYOUT_VERSION = "1"  # bump when the way environments are made changes


class HostVenv:
    def __init__(self, target: Target, backend: str) -> None:
        self.target = target
        self.backend = backend
        pins = interpreters()[target.interpreter]
        self.requires = sorted(
            {*common_requires(), *pins.requires, *backend_requires(backend), *target.extra_requires}
        )
        key = json.dumps([LAYOUT_VERSION, target.python, self.requires]).encode()
        digest = hashlib.sha256(key).hexdigest()[:12]
        name = f"{target.interpreter}-{backend}-py{target.python}-{digest}"
        self.path = cache_dir() / "envs" / name

    @property
    def python(self) -> str:
        return str(self.path / "bin" / "python")

    def describe(self) -> str:
        return f"host venv {self.path}"

    def exists(self) -> bool:
        return (self.path / ".complete").is_file()

    def ensure(self, echo: Echo) -> None:
        if self.exists():
            return
        base_python = self._base_python()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.parent / f".{self.path.name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # two builds at once: the second waits and reuses
            if self.exists():
                return
            echo(f"creating build environment {self.path} (first build only)")
            tmp = self.path.with_name(self.path.name + ".partial")
            shutil.rmtree(tmp, ignore_errors=True)
            log = self.path.parent / f"{self.path.name}.log"
            log.unlink(missing_ok=True)
            try:
                run(
                    [base_python, "-m", "venv", str(tmp)],
                    log=log,
                    echo=echo,
                    what="creating the build venv",
                    error=ToolMissingError,
                )
                run(
                    [
                        str(tmp / "bin" / "python"),
                        "-m",
                        "pip",
                        "install",
                        "--quiet",
                        "--disable-pip-version-check",
                        "--only-binary=:all:",
                        *self.requires,
                    ],
                    log=log,
                    echo=echo,
                    what="pip install into the build venv",
                    error=ToolMissingError,
                )
                (tmp / ".complete").write_text("\n".join(self.requires) + "\n")
                shutil.rmtree(self.path, ignore_errors=True)
                os.replace(tmp, self.path)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)

    def run(self, argv: list[str], *, log: Path | None, what: str, cwd: Path | None = None) -> str:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
        env["PATH"] = f"{self.path / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        return run(argv, log=log, env=env, cwd=cwd, what=what)

    def _base_python(self) -> str:
        wanted = self.target.python
        exe = which(f"python{wanted}")
        out = subprocess.run(
            [exe, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        if out != wanted:
            raise ToolMissingError(
                f"python{wanted} on PATH is Python {out or '(unusable)'}; install Python {wanted}"
            )
        return exe
