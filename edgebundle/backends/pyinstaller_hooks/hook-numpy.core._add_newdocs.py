"""NumPy 1.x's ``numpy.core._add_newdocs`` imports ``numpy.core._multiarray_tests`` through
``__import__`` (add_newdoc), which PyInstaller cannot see. PyInstaller's own NumPy hook adds it only
for NumPy >= 1.25; the Debian build roots' NumPy is 1.24 (pins.toml, debian-root), where it is needed
just the same: without it ``import numpy`` fails in the binary."""

hiddenimports = ["numpy.core._multiarray_tests"]
