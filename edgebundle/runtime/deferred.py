"""Stand-ins for standard library modules that the binary's libraries import on their first lines
and a run seldom uses: ``logging`` (each Pillow module asks for a logger, and logs at DEBUG while
decoding) and ``tempfile`` (Image.show and JPEG's djpeg helpers), imported by Pillow; ``pickle``,
``ast``, ``platform`` and ``textwrap``, imported by NumPy 1.26 and tflite_runtime for functions a
run never calls. With what they import in turn (traceback, linecache, tokenize, string, weakref,
shutil, fnmatch, random, _compat_pickle...) they are about a third of importing Pillow, and ~4 ms
of a default binary's start besides.

``install()``, at the binary's entry and before those libraries, puts the stand-ins in
``sys.modules``. The first use of anything of a module imports the real one in its place, so every
use still gets the standard library's behaviour (a ``from pickle import X`` at import time just
imports it then). A logger handed out meanwhile drops DEBUG and INFO records while ``logging`` has
never been imported, as the real one would: nothing can have configured it, and the root logger's
default level is WARNING. Every other call of it goes to the real logger.
"""

from __future__ import annotations

import sys
import types
from typing import Any

DEFERRED = ("logging", "tempfile", "pickle", "ast", "platform", "textwrap")


class Deferred(types.ModuleType):
    """A module that becomes the real one at the first attribute asked of it."""

    def __getattr__(self, attr: str) -> Any:
        return getattr(real(self.__name__), attr)


def real(name: str) -> types.ModuleType:
    """The real top-level module ``name``, imported in place of its stand-in if need be."""
    module = sys.modules.get(name)
    if module is None or isinstance(module, Deferred):
        sys.modules.pop(name, None)
        module = __import__(name)
    return module


def _logging_is_real() -> bool:
    return "logging" in sys.modules and not isinstance(sys.modules["logging"], Deferred)


class Logger:
    """What ``logging.getLogger(name)`` returns while ``logging`` is a stand-in."""

    __slots__ = ("name",)

    def __init__(self, name: str | None) -> None:
        self.name = name

    def _real(self) -> Any:
        return real("logging").getLogger(self.name)

    def debug(self, msg: object, *args: object, **kwargs: Any) -> None:
        if _logging_is_real():
            self._real().debug(msg, *args, **kwargs)

    def info(self, msg: object, *args: object, **kwargs: Any) -> None:
        if _logging_is_real():
            self._real().info(msg, *args, **kwargs)

    def __getattr__(self, attr: str) -> Any:  # warning, error, exception, isEnabledFor, ...
        return getattr(self._real(), attr)


_loggers: dict[str | None, Logger] = {}


def get_logger(name: str | None = None) -> Any:
    if _logging_is_real():
        return real("logging").getLogger(name)
    return _loggers.setdefault(name, Logger(name))


def install() -> None:
    """Stand-ins for the modules of DEFERRED that are not imported yet."""
    for name in DEFERRED:
        if name not in sys.modules:
            module = Deferred(name)
            if name == "logging":
                module.getLogger = get_logger  # type: ignore[attr-defined]
            sys.modules[name] = module
