"""The host's pip configuration, carried into a build root so that pip there uses the same index,
proxy, certificates and wheelhouse: the environment (PIP_*, proxies), the configuration files pip
reads, and the local paths those settings name.

Hand-written, checked against pip itself: ``pip config debug`` names the same files (a test compares
them), but calling it needs a pip on the host, which neither a pipx installation of edgebundle nor
Debian's python3 guarantees, and pip has no importable API (pip._internal is private). What is read
here is pip's documented precedence (pip.pypa.io, "Configuration": global, user, PIP_CONFIG_FILE).
"""

from __future__ import annotations

import configparser
import os
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePosixPath
from typing import Final
from urllib.parse import unquote, urlparse

# PIP_* variables that would redirect an install away from the venv, or name a file by a host path.
PIP_ENV_DROPPED: Final = frozenset(
    {"PIP_TARGET", "PIP_PREFIX", "PIP_ROOT", "PIP_USER", "PIP_PYTHON", "PIP_CONFIG_FILE", "PIP_SRC"}
)
PROXY_ENV: Final = ("http_proxy", "https_proxy", "no_proxy", "all_proxy")
ENV_PIP_CONF: Final = PurePosixPath("/etc/edgebundle/pip-env.conf")  # PIP_CONFIG_FILE, copied in


def pip_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """What pip inside the root inherits from the host's environment: PIP_* and proxies."""
    env = {k: v for k, v in environ.items() if k.startswith("PIP_") and k not in PIP_ENV_DROPPED}
    for name in PROXY_ENV:
        for key in (name, name.upper()):
            if key in environ:
                env[key] = environ[key]
    if environ.get("PIP_CONFIG_FILE") and environ["PIP_CONFIG_FILE"] != os.devnull:
        env["PIP_CONFIG_FILE"] = str(ENV_PIP_CONF)
    return env


def pip_config_files(environ: Mapping[str, str], home: Path) -> list[tuple[Path, PurePosixPath]]:
    """(host path, path inside the root) of every pip configuration the host's pip reads: site-wide
    (``$XDG_CONFIG_DIRS/pip/*``, including files they refer to, and /etc/pip.conf), the user's (to
    /root, the HOME of pip steps inside) and ``$PIP_CONFIG_FILE``."""
    found: list[tuple[Path, PurePosixPath]] = []
    for directory in (environ.get("XDG_CONFIG_DIRS") or "/etc/xdg").split(":"):
        pip_dir = Path(directory) / "pip"
        if directory and pip_dir.is_dir():
            found += [(f, PurePosixPath(f)) for f in sorted(pip_dir.iterdir()) if f.is_file()]
    found.append((Path("/etc/pip.conf"), PurePosixPath("/etc/pip.conf")))
    config_home = Path(environ.get("XDG_CONFIG_HOME") or home / ".config")
    found.append((config_home / "pip" / "pip.conf", PurePosixPath("/root/.config/pip/pip.conf")))
    found.append((home / ".pip" / "pip.conf", PurePosixPath("/root/.pip/pip.conf")))
    if environ.get("PIP_CONFIG_FILE") and environ["PIP_CONFIG_FILE"] != os.devnull:
        found.append((Path(environ["PIP_CONFIG_FILE"]), ENV_PIP_CONF))
    return [(host, inside) for host, inside in found if host.is_file()]


def _config_items(path: Path) -> list[tuple[str, str]]:
    parser = configparser.RawConfigParser()
    try:
        parser.read(path)
    except (configparser.Error, UnicodeDecodeError):
        return []
    return [(key, value) for section in parser.sections() for key, value in parser.items(section)]


def pip_local_paths(items: Iterable[tuple[str, str]]) -> list[str]:
    """Host paths that pip settings point at (find-links directories, ``file://`` indexes,
    constraint files, ...), so that pip inside the root can see them too.

    For a ``file://`` index the parent directory is returned: a PEP 503 page under ``simple/``
    usually links to files beside it (``../../files/...``).
    """
    paths: list[str] = []
    for key, value in items:
        for token in value.split():
            if token.startswith("file://"):
                path = unquote(urlparse(token).path).rstrip("/")
                if "index-url" in key and path.count("/") > 1:
                    path = path.rsplit("/", 1)[0]
            elif token.startswith("/"):
                path = token.rstrip("/") or "/"
            else:
                continue
            if path not in paths:
                paths.append(path)
    return paths


def pip_settings(environ: Mapping[str, str], config_files: Iterable[Path]) -> list[tuple[str, str]]:
    """(key, value) of every pip setting: from the config files, then PIP_* (``PIP_FIND_LINKS`` ->
    ``find-links``)."""
    items = [item for file in config_files for item in _config_items(file)]
    for key, value in environ.items():
        if key.startswith("PIP_") and key not in PIP_ENV_DROPPED:
            items.append((key[4:].lower().replace("_", "-"), value))
    return items
