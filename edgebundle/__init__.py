"""edgebundle: a TFLite model + a preprocessing recipe -> one self-contained executable for edge Linux."""

from __future__ import annotations

__version__ = "0.1.0"
