"""Run-time hook: the NumPy subpackages the runtime never uses cost nothing at start-up.

``import numpy`` imports numpy.fft, numpy.polynomial, numpy.ma and numpy.random eagerly: about a third
of its import time (~30 ms of a ~150 ms start on a 2-core x86_64). Here the first three are imported
lazily (importlib.util.LazyLoader: the module exists, its code runs at its first attribute access), and
numpy.random and numpy.linalg's compiled modules, which are not in the binary at all (2.5 MB of
compiled generators; LAPACK), are stand-ins that say so when they are used: ``import numpy`` (whose
numpy.linalg imports ``_umath_linalg``) works, ``np.linalg.inv`` raises ModuleNotFoundError. Runs
before the runtime's first import (PyInstaller ``--runtime-hook``).
"""

from __future__ import annotations


def _install() -> None:
    import importlib.machinery
    import importlib.util
    import sys
    import types
    from collections.abc import Sequence

    lazy = {"numpy.fft", "numpy.polynomial", "numpy.ma"}
    absent = {"numpy.random", "numpy.linalg._umath_linalg", "numpy.linalg.lapack_lite"}

    class Absent(types.ModuleType):
        def __getattr__(self, name: str) -> object:
            if name.startswith("__"):
                raise AttributeError(name)
            raise ModuleNotFoundError(f"{self.__name__} is not part of this binary (left out by edgebundle)")

    class AbsentLoader(importlib.machinery.BuiltinImporter):
        @staticmethod
        def create_module(spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
            return Absent(spec.name)

        @staticmethod
        def exec_module(module: types.ModuleType) -> None:
            pass

    class Finder(importlib.machinery.PathFinder):
        @classmethod
        def find_spec(
            cls, fullname: str, path: Sequence[str] | None = None, target: types.ModuleType | None = None
        ) -> importlib.machinery.ModuleSpec | None:
            if fullname in absent:
                return importlib.util.spec_from_loader(fullname, AbsentLoader())
            if fullname not in lazy:
                return None
            for finder in sys.meta_path:
                if finder is cls:
                    continue
                spec = finder.find_spec(fullname, path, target)
                if spec is not None and spec.loader is not None:
                    spec.loader = importlib.util.LazyLoader(spec.loader)
                    return spec
            return None

    sys.meta_path.insert(0, Finder)


_install()
del _install
