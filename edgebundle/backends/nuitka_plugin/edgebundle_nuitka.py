"""edgebundle's Nuitka plugin (``--user-plugin``): links the C files next to this one into the
program (release_bytecode.c, defer_inspect.c), runs the deferred inspect patch after inspect's
import, lets NumPy bring the system libraries it links to, and carries LiteRT's C library for the
runtime's binding to it. Runs inside Nuitka, in the build environment: imports nothing of edgebundle."""

import os
from pathlib import Path

from nuitka.plugins.PluginBase import NuitkaPluginBase

# What defer_inspect.c leaves in sys; called once, right after the import of inspect.
POST_LOAD_INSPECT = """\
import sys
_patch = sys.__dict__.pop("_edgebundle_patch_inspect", None)
if _patch is not None:
    _patch()
"""


# The runtime's LiteRT binding (runtime/litert.py: LIBRARY, PACKAGE_DIR) and where it looks for the
# library: ai_edge_litert/libLiteRt.so under a sys.path entry, the program's folder in a Nuitka program.
LITERT_BINDING = "ebrt.litert"
LITERT_PACKAGE = "ai_edge_litert"
LITERT_LIBRARY = "libLiteRt.so"


class EdgebundlePlugin(NuitkaPluginBase):  # type: ignore[misc]  # Nuitka has no type hints
    plugin_name = "edgebundle"
    plugin_desc = "Bytecode pages given back once read; inspect patched when imported (edgebundle)."

    @staticmethod
    def isAlwaysEnabled() -> bool:
        return True

    def getExtraCodeFiles(self) -> dict[str, str]:
        here = Path(__file__).parent
        return {f"edgebundle_{c.name}": c.read_text() for c in sorted(here.glob("*.c"))}

    def getExtraDlls(self, module: object) -> object:
        """libLiteRt.so, which the binding loads with ctypes (Nuitka cannot see that), at
        ai_edge_litert/ in the folder: the library alone, not the package (its Python side imports
        NumPy; its other libraries are GPU/NPU accelerators). As a DLL, not a data file: Nuitka then
        scans what it needs (libstdc++, libgcc_s: left to the system as for every library, and carried
        with the C library unless --system-libc, backends/libc.py) and sets its RPATH."""
        if module.getFullName() != LITERT_BINDING:  # type: ignore[attr-defined]
            return
        package = self.locateModule(LITERT_PACKAGE)
        library = os.path.join(package or "", LITERT_LIBRARY)
        if package is None or not os.path.isfile(library):
            self.sysexit(f"{LITERT_BINDING} needs {LITERT_PACKAGE}/{LITERT_LIBRARY}, not in this environment")
        yield self.makeDllEntryPoint(
            source_path=os.path.abspath(library),
            dest_path=os.path.join(LITERT_PACKAGE, LITERT_LIBRARY),
            module_name=LITERT_BINDING,
            package_name="ebrt",
            reason="loaded by the runtime's LiteRT binding with ctypes",
        )

    @staticmethod
    def decideAllowOutsideDependencies(module_name: object) -> bool | None:
        """In a Debian build root NumPy is Debian's python3-numpy, linked to the system's BLAS
        (/usr/lib/<triplet>/libblas.so.3, through update-alternatives): Nuitka leaves libraries from
        outside the Python installation out unless told, and the program then fails to import NumPy
        (PyInstaller bundles them). Only for a NumPy that the system's package manager installed:
        for a pip-installed one Nuitka's own dll-files plugin says no, and two opinions are an error."""
        if not module_name.hasNamespace("numpy"):  # type: ignore[attr-defined]
            return None
        from nuitka.utils.Distributions import (
            getDistributionFromModuleName,
            getDistributionName,
            isDistributionSystemPackage,
        )
        from nuitka.utils.ModuleNames import ModuleName

        distribution = getDistributionFromModuleName(ModuleName("numpy"))
        if distribution is not None and isDistributionSystemPackage(getDistributionName(distribution)):
            return True
        return None

    @staticmethod
    def createPostModuleLoadCode(module: object) -> tuple[str, str] | None:
        if module.getFullName() == "inspect":  # type: ignore[attr-defined]
            return POST_LOAD_INSPECT, "Nuitka's inspect patch, deferred to inspect's import."
        return None
