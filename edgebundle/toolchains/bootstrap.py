"""Making a root filesystem: mmdebstrap's command line, and the hook that brings the host's extra CA
certificates in before any package is installed. (debroot.py runs it; the result is cached.)

mmdebstrap rather than debootstrap: it installs with the host's apt (one dependency solve, parallel
downloads), can leave apt out of the root and runs hooks at each stage.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import Final

from .namespace import PRIVATE_MOUNTS

# Documentation is never used in a build root; leaving it out saves dpkg work under QEMU.
DPKG_OPTIONS: Final = (
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
)


def ca_certificates_hook(certificates: Iterable[Path]) -> str | None:
    """An mmdebstrap setup hook copying the host's extra CA certificates into the new root before
    any package is installed: ca-certificates' own postinst then runs update-ca-certificates with
    them (a second run under QEMU costs ~40 s)."""
    commands = []
    for cert in certificates:
        inside = PurePosixPath("/") / cert.relative_to("/")
        dest = '"$1"' + shlex.quote(str(inside))
        commands.append(
            f'mkdir -p "$1"{shlex.quote(str(inside.parent))} && cp {shlex.quote(str(cert))} {dest}'
        )
    return " && ".join(commands) if commands else None


def mmdebstrap_argv(
    *,
    debian_arch: str,
    packages: Iterable[str],
    rootfs: Path,
    sources: Path,
    setup_hooks: Iterable[str] = (),
    suite: str,
) -> list[str]:
    """mmdebstrap in its own private mount namespace, so that whatever it mounts inside the root
    while installing goes away with it, even when it is killed.

    The ``essential`` variant: Essential:yes packages plus ours, installed by the host's apt; no apt
    inside (nothing in a build runs it), so fewer packages to configure under QEMU."""
    return [
        *PRIVATE_MOUNTS,
        "--kill-child",
        "--",
        "mmdebstrap",
        "--mode=root",
        "--variant=essential",
        "--format=directory",
        f"--arch={debian_arch}",
        f"--include={','.join(sorted(packages))}",
        *(f"--dpkgopt={opt}" for opt in DPKG_OPTIONS),
        "--aptopt=Acquire::Retries 3",
        *(f"--setup-hook={hook}" for hook in setup_hooks),
        suite,
        str(rootfs),
        str(sources),
    ]
