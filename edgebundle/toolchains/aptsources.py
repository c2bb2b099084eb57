"""The host's apt sources, read so that a build root comes from the same mirror (or snapshot, or
proxy) as the host's own packages: sources.list-style (one-line) and deb822 ``.sources`` files.

Hand-written: python-apt, which parses both formats as apt does, is a Debian package and not on PyPI;
python-debian parses deb822 only (the 20-line half of this module). What is needed of either format
(enabled ``deb`` entries of one suite, their URIs, components and Signed-By) fits in these lines,
tested against real files of both formats.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Final

HOST_SOURCES: Final = (Path("/etc/apt/sources.list"), Path("/etc/apt/sources.list.d"))
DEFAULT_KEYRING: Final = Path("/usr/share/keyrings/debian-archive-keyring.gpg")


def default_sources(suite: str) -> str:
    """Debian's own mirror, for a host whose apt sources have no Debian ``suite`` (an Ubuntu CI
    runner, say)."""
    return f"""\
Types: deb
URIs: http://deb.debian.org/debian
Suites: {suite} {suite}-updates
Components: main
Signed-By: {DEFAULT_KEYRING}

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: {suite}-security
Components: main
Signed-By: {DEFAULT_KEYRING}
"""


def _deb822_stanzas(text: str) -> list[dict[str, str]]:
    stanzas: list[dict[str, str]] = []
    current: dict[str, str] = {}
    key = ""
    for raw in [*text.splitlines(), ""]:
        if raw.startswith("#"):
            continue
        if not raw.strip():
            if current:
                stanzas.append(current)
            current, key = {}, ""
        elif raw[0] in " \t" and key:
            current[key] += "\n" + raw
        elif ":" in raw:
            key, _, value = raw.partition(":")
            key = key.strip()
            current[key] = value.strip()
    return stanzas


def _one_line_stanzas(text: str) -> list[dict[str, str]]:
    stanzas = []
    for raw in text.splitlines():
        words = raw.split("#", 1)[0].split()
        if len(words) < 3 or words[0] != "deb":
            continue
        options: dict[str, str] = {}
        if words[1].startswith("["):
            end = next(i for i, w in enumerate(words) if w.endswith("]"))
            for opt in " ".join(words[1 : end + 1]).strip("[]").split():
                name, _, value = opt.partition("=")
                options[name] = value
            words = [words[0], *words[end + 1 :]]
        if len(words) < 3:
            continue
        stanza = {"Types": "deb", "URIs": words[1], "Suites": words[2], "Components": " ".join(words[3:])}
        if "signed-by" in options:
            stanza["Signed-By"] = options["signed-by"]
        stanzas.append(stanza)
    return stanzas


def select_sources(files: Iterable[tuple[str, str]], suite: str) -> str | None:
    """The host's apt sources for ``suite`` (``bookworm``, ``bookworm-updates``, ...) as deb822, so
    that the root comes from the same mirror (or snapshot, or proxy) as the host's packages.

    ``files`` are (name, text) of sources.list-style (one-line) and ``.sources`` (deb822) files.
    Architecture restrictions are dropped (the root's arch is another); disabled stanzas, deb-src and
    other suites are left out. None when nothing matches.
    """
    out = []
    for name, text in files:
        stanzas = _deb822_stanzas(text) if name.endswith(".sources") else _one_line_stanzas(text)
        for stanza in stanzas:
            if stanza.get("Enabled", "yes").lower() == "no":
                continue
            if "deb" not in stanza.get("Types", "").split():
                continue
            suites = [s for s in stanza.get("Suites", "").split() if s == suite or s.startswith(suite + "-")]
            if not suites or not stanza.get("URIs"):
                continue
            kept = {
                k: v for k, v in stanza.items() if k not in ("Architectures", "Types", "Suites", "Enabled")
            }
            lines = ["Types: deb", f"Suites: {' '.join(suites)}", *(f"{k}: {v}" for k, v in kept.items())]
            out.append("\n".join(lines) + "\n")
    return "\n".join(out) if out else None


def host_sources(paths: Iterable[Path] = HOST_SOURCES) -> list[tuple[str, str]]:
    files: list[tuple[str, str]] = []
    for path in paths:
        candidates = sorted(path.iterdir()) if path.is_dir() else [path]
        for file in candidates:
            if file.suffix in (".list", ".sources") and file.is_file():
                files.append((file.name, file.read_text(errors="replace")))
    return files
