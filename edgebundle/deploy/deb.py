"""``edgebundle package --format deb``: a binary as a Debian package, for fleets that apt, Ansible or
Mender's deb update module manage. The same layout as ``edgebundle deploy`` (PREFIX/NAME/releases/
SHA12/NAME, ``current`` linking to it), the same unit (unit.py) with --service, and maintainer scripts
that enable and restart it, failing the installation (dpkg then reports the package half-configured)
when it does not start: nothing is rolled silently."""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from .. import outputs, workspace
from ..errors import ConfigError
from ..proc import TIMEOUT_S, run
from . import Binary, DeployOptions, read_binary, spec_for
from .unit import render

DEB_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}
SYSTEMD_DIR = "lib/systemd/system"

POSTINST = """#!/bin/sh
set -e
if [ "$1" = configure ] && [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    systemctl enable {unit} >/dev/null 2>&1 || true
    if ! systemctl restart {unit}; then
        echo "{unit} did not become ready (journalctl -u {unit}); the previous version is not restored" >&2
        exit 1
    fi
fi
"""
PRERM = """#!/bin/sh
set -e
if [ "$1" = remove ] && [ -d /run/systemd/system ]; then
    systemctl stop {unit} || true
    systemctl disable {unit} >/dev/null 2>&1 || true
fi
"""
POSTRM = """#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi
"""


@dataclass(frozen=True)
class Package:
    path: Path
    name: str
    version: str
    arch: str

    def summary(self) -> str:
        size = self.path.stat().st_size
        return f"packaged {self.path}: {self.name} {self.version} ({self.arch}), {size:,} bytes"


def default_version(binary: Binary) -> str:
    """Newer builds sort higher (apt upgrades by version): the build's time, then the release."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    stamp = int(epoch) if epoch and epoch.isdigit() else int(binary.path.stat().st_mtime)
    return f"1.{time.strftime('%Y%m%d%H%M%S', time.gmtime(stamp))}+{binary.sha12}"


def package_deb(
    binary_path: Path, opts: DeployOptions, out_dir: Path, version: str | None, maintainer: str
) -> Package:
    binary = read_binary(binary_path)
    arch = DEB_ARCH[binary.arch]
    package = f"edgebundle-{opts.name.replace('_', '-')}"
    version = version or default_version(binary)
    if not version[:1].isdigit() or any(c.isspace() for c in version):
        raise ConfigError(f"--version {version!r}: a Debian version starts with a digit and has no spaces")
    out = out_dir / f"{package}_{version}_{arch}.deb"
    outputs.check(out, "-o", inputs=[binary_path])
    spec = spec_for(binary, opts)
    with workspace.scratch(f"package-{package}") as stage:
        root = stage / "root"
        release = root / opts.prefix.lstrip("/") / opts.name / "releases" / binary.sha12
        release.mkdir(parents=True)
        shutil.copyfile(binary_path, release / opts.name)
        (release / opts.name).chmod(0o755)
        (release.parent.parent / "current").symlink_to(f"releases/{binary.sha12}/{opts.name}")
        debian = root / "DEBIAN"
        debian.mkdir()
        scripts = {}
        if opts.service:
            unit_dir = root / SYSTEMD_DIR
            unit_dir.mkdir(parents=True)
            (unit_dir / spec.unit_name).write_text(render(spec))
            scripts = {"postinst": POSTINST, "prerm": PRERM, "postrm": POSTRM}
        for name, text in scripts.items():
            (debian / name).write_text(text.format(unit=spec.unit_name))
            (debian / name).chmod(0o755)
        size_kb = (binary.size + 1023) // 1024
        (debian / "control").write_text(
            f"Package: {package}\n"
            f"Version: {version}\n"
            f"Architecture: {arch}\n"
            f"Maintainer: {maintainer}\n"
            f"Installed-Size: {size_kb}\n"
            "Section: misc\n"
            "Priority: optional\n"
            f"Description: {binary.description}\n"
            f" One self-contained executable made by edgebundle (release {binary.sha12})"
            + (f", run as {spec.unit_name}.\n" if opts.service else ".\n")
        )
        built = stage / out.name
        run(
            ["dpkg-deb", "--root-owner-group", "-Zxz", "--build", str(root), str(built)],
            echo=None,
            what="dpkg-deb --build",
            timeout=TIMEOUT_S["compile"],
        )
        partial = outputs.partial_name(out)
        try:
            shutil.copyfile(built, partial)
            outputs.install(partial, out)
        finally:
            partial.unlink(missing_ok=True)
    return Package(path=out, name=package, version=version, arch=arch)
