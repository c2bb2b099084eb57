"""Stands in for PyInstaller's run-time hooks of the modules listed in rthooks.dat: nothing to do."""
