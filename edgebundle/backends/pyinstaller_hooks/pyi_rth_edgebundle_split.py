"""Run-time hook: the compiled modules of packages whose Python modules are in base_library.zip.

pyinstaller.finish() moves a package's ``.pyc`` files into the zip when its compiled modules all sit
in its top folder (Pillow: ``PIL/_imaging....so``), and leaves those in the folder: a first start
creates one file per module, and zipimport cannot load compiled ones. The package's ``__path__`` is
then the zip alone, so this finder, consulted after all the others, finds them in the folder. A name
no other finder knows costs it a few ``stat`` calls. Runs before the runtime's first import
(PyInstaller ``--runtime-hook``).
"""

from __future__ import annotations


def _install() -> None:
    import importlib.machinery
    import os
    import sys
    from collections.abc import Sequence

    root: str = sys._MEIPASS  # type: ignore[attr-defined]
    suffixes = importlib.machinery.EXTENSION_SUFFIXES

    class CompiledBesideTheZip:
        @staticmethod
        def find_spec(
            fullname: str, path: Sequence[str] | None = None, target: object = None
        ) -> importlib.machinery.ModuleSpec | None:
            package, _, name = fullname.rpartition(".")
            if not package:
                return None
            folder = os.path.join(root, *package.split("."))
            for suffix in suffixes:
                location = os.path.join(folder, name + suffix)
                if os.path.isfile(location):
                    loader = importlib.machinery.ExtensionFileLoader(fullname, location)
                    spec = importlib.machinery.ModuleSpec(fullname, loader, origin=location)
                    spec.has_location = True  # its __file__, as the path finder's modules have
                    return spec
            return None

    sys.meta_path.append(CompiledBesideTheZip)


_install()
