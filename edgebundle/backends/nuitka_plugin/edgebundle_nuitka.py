"""edgebundle's Nuitka plugin (``--user-plugin``): links release_bytecode.c, next to this file, into
the program. Runs inside Nuitka, in the build environment: imports nothing of edgebundle."""

from pathlib import Path

from nuitka.plugins.PluginBase import NuitkaPluginBase


class EdgebundlePlugin(NuitkaPluginBase):  # type: ignore[misc]  # Nuitka has no type hints
    plugin_name = "edgebundle"
    plugin_desc = "Gives back the pages of the bytecode blob once read (edgebundle)."

    @staticmethod
    def isAlwaysEnabled() -> bool:
        return True

    def getExtraCodeFiles(self) -> dict[str, str]:
        source = Path(__file__).with_name("release_bytecode.c")
        return {"edgebundle_release_bytecode.c": source.read_text()}
