"""The binary's stand-ins for logging and tempfile (edgebundle/runtime/deferred.py), each case in a
fresh interpreter: installing them changes that process's sys.modules for good."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from tests.conftest import DIGITS, ROOT

# What logging and tempfile import in turn, and nothing else of the runtime's path imports.
BEHIND = ["logging", "tempfile", "traceback", "linecache", "tokenize", "shutil", "random", "fnmatch"]


def run(code: str) -> dict[str, object]:
    """``code`` after install(), in a new interpreter; it sets ``out`` (JSON) and may print to stderr."""
    script = (
        "import json, sys\n"
        "start = set(sys.modules)  # what the interpreter itself imported (site, .pth files)\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "from edgebundle.runtime import deferred\n"
        "deferred.install()\n"
        "def loaded(name):\n"
        "    return name in sys.modules and not isinstance(sys.modules[name], deferred.Deferred)\n"
        + textwrap.dedent(code)
        + "\nprint(json.dumps(out))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-I", "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, object] = json.loads(proc.stdout)
    result["stderr"] = proc.stderr
    return result


def test_pillow_decodes_an_image_without_importing_them() -> None:
    out = run(
        f"""
        from PIL import Image, PngImagePlugin
        with Image.open({str(DIGITS / "sample_7.png")!r}) as img:
            img.load()
            size = img.size
        out = {{"size": list(size), "loaded": [m for m in {BEHIND!r} if loaded(m) and m not in start]}}
        """
    )
    assert out["size"] == [32, 32]
    assert out["loaded"] == []


def test_the_first_use_imports_the_real_module_in_place_of_the_stand_in() -> None:
    out = run(
        """
        import tempfile
        before = loaded("tempfile")
        directory = tempfile.gettempdir()
        import tempfile as again
        out = {"before": before, "after": loaded("tempfile"), "same": again.gettempdir() == directory,
               "real": again is sys.modules["tempfile"] and hasattr(again, "mkstemp")}
        """
    )
    assert out["before"] is False
    assert out["after"] is True
    assert out["same"] is True
    assert out["real"] is True


def test_a_logger_drops_debug_until_logging_is_real_and_passes_errors_on() -> None:
    out = run(
        """
        import logging
        log = logging.getLogger("PIL.Image")
        log.debug("not shown %s", 1)
        log.info("nor this")
        quiet = loaded("logging")
        log.error("shown %s", 2)  # the real logging's last-resort handler: the message on stderr
        same = logging.getLogger("x") is sys.modules["logging"].getLogger("x")
        out = {"quiet": quiet, "real": loaded("logging"), "same": same}
        """
    )
    assert out["quiet"] is False
    assert out["real"] is True
    assert out["same"] is True
    assert out["stderr"] == "shown 2\n"


def test_debug_records_reach_a_logging_that_was_configured_after_the_logger_was_made() -> None:
    out = run(
        """
        import logging
        log = logging.getLogger("PIL.PngImagePlugin")
        real = sys.modules["logging"]
        real.basicConfig(level=real.DEBUG, format="%(name)s %(levelname)s %(message)s")
        log.debug("chunk %s", "IHDR")
        out = {}
        """
    )
    assert out["stderr"] == "PIL.PngImagePlugin DEBUG chunk IHDR\n"


def test_submodules_import_through_a_stand_in() -> None:
    out = run(
        """
        import logging.handlers
        out = {"handler": logging.handlers.RotatingFileHandler.__name__, "real": loaded("logging")}
        """
    )
    assert out == {"handler": "RotatingFileHandler", "real": True, "stderr": ""}


def test_a_module_imported_before_is_left_alone() -> None:
    script = (
        "import logging, sys\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "from edgebundle.runtime import deferred\n"
        "deferred.install()\n"
        "print(type(sys.modules['logging']).__name__, type(sys.modules['tempfile']).__name__)\n"
    )
    proc = subprocess.run([sys.executable, "-I", "-c", script], capture_output=True, text=True, check=True)
    assert proc.stdout.split() == ["module", "Deferred"]


def test_numpy_imports_and_pickles_through_the_stand_ins() -> None:
    out = run(
        """
        import numpy as np
        import pickle
        a = np.arange(6, dtype=np.float32).reshape(2, 3)
        b = pickle.loads(pickle.dumps(a))
        out = {"equal": bool((a == b).all()), "real": loaded("pickle")}
        """
    )
    assert out["equal"] is True
    assert out["real"] is True  # pickled by the real module, imported at its first use
