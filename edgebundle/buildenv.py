"""Which toolchain a build runs in, holding what its backend needs: the host venv for a native build,
a Debian root for a foreign arch or ``--isolated``.

This is the one place that puts the two layers together: a backend (and the launcher in front of
every binary) declares the Debian packages it needs, a toolchain receives them as data and never
imports a backend (pyproject.toml's import-linter contracts).
"""

from __future__ import annotations

from .backends import apt_packages
from .errors import ConfigError
from .plan import BuildPlan, backend_name
from .target import BACKENDS, Target, bundled_targets, load_target
from .toolchains import Toolchain
from .toolchains.debroot import DebRoot
from .toolchains.venv import HostVenv


def debian_root(target: Target, backend: str) -> DebRoot:
    """The Debian build root of ``target`` for ``backend`` (made on first use by ``ensure``); a
    ConfigError for an unknown backend (it takes what ``--backend`` was given)."""
    name = backend_name(backend)
    return DebRoot(target, name, apt_packages=apt_packages(name))


def for_plan(plan: BuildPlan) -> Toolchain:
    """The host venv for a native build; a Debian root for a foreign arch or ``--isolated``
    (``plan.build_env`` says the same in words)."""
    if plan.native and not plan.isolated:
        return HostVenv(plan.target, plan.backend)
    return debian_root(plan.target, plan.backend)


def current_root_names() -> list[str]:
    """The directory names the current pins give each bundled target and backend (the others in the
    cache are stale)."""
    names = []
    for name in sorted(bundled_targets()):
        for backend in BACKENDS:
            try:
                names.append(debian_root(load_target(name), backend).path.name)
            except ConfigError:
                continue  # a target no root can build (its Python is not Debian's)
    return names
