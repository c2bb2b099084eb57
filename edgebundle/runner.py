"""Every external command goes through ``run``: it echoes ``+ argv``, resolves the executable first
(with an install hint when missing), keeps the full output in a log file, and on failure raises with
the command, the exit code and the tail of the output."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from .errors import BuildError, ToolMissingError

INSTALL_HINTS: dict[str, str] = {
    "python3.11": "install Python 3.11 (Debian 12: apt-get install python3.11 python3.11-venv)",
    "python3.10": "install Python 3.10 (e.g. with pyenv or the deadsnakes packages)",
    "python3.12": "install Python 3.12 (e.g. with pyenv or apt-get install python3.12-venv)",
    "strip": "apt-get install binutils",
    "objdump": "apt-get install binutils",
    "patchelf": "apt-get install patchelf",
    "gcc": "apt-get install gcc",
    "zstd": "apt-get install zstd",
}

# A stderr echo of each command, so that logs show what ran (like ``set -x``).
Echo = Callable[[str], None]


def _default_echo(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def which(tool: str) -> str:
    """The absolute path of ``tool``, or a ToolMissingError with a hint on how to install it."""
    found = tool if os.path.sep in tool and os.access(tool, os.X_OK) else shutil.which(tool)
    if not found:
        hint = INSTALL_HINTS.get(os.path.basename(tool), f"install {tool} and put it on PATH")
        raise ToolMissingError(f"{tool}: not found; {hint}")
    return found


def run(
    argv: Sequence[str],
    *,
    log: Path | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    echo: Echo | None = _default_echo,
    what: str | None = None,
    error: type[Exception] = BuildError,
    tail_lines: int = 15,
) -> str:
    """Run a command to completion and return its stdout (stderr goes to the log).

    On a non-zero exit raise ``error`` naming ``what`` (or the command), the exit code, the last
    lines of output and where the full log is.
    """
    argv = [which(argv[0]), *argv[1:]]
    if echo:
        echo("+ " + shlex.join(argv))
    proc = subprocess.run(
        argv,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        env=dict(env) if env is not None else None,
        cwd=cwd,
        check=False,
    )
    stdout = proc.stdout.decode("utf-8", "replace")
    stderr = proc.stderr.decode("utf-8", "replace")
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "a", encoding="utf-8") as f:
            f.write(f"+ {shlex.join(argv)}\n{stdout}{stderr}[exit {proc.returncode}]\n")
    if proc.returncode != 0:
        tail = (stderr.strip() or stdout.strip()).splitlines()[-tail_lines:]
        code = proc.returncode
        reason = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
        where = f" (full log: {log})" if log else ""
        label = what or shlex.join(argv[:3])
        details = " | ".join(line.strip() for line in tail if line.strip())
        raise error(f"{label} failed with {reason}{where}: {details}")
    return stdout
