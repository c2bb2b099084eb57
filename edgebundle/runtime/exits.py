"""The binary's exit codes, for every mode (the ``--help`` epilog and the README list them).

``--eb-measure`` is another program sharing the binary and keeps its own (measure.py)."""

from __future__ import annotations

EXIT_OK = 0
# the self-test failed, or the model does not match the manifest; --serve: a second signal cut the
# drain short
EXIT_FAILED = 1
# a bad input or argument (the other images are still processed); --batch: some requests failed
EXIT_BAD_INPUT = 2
EXIT_MODEL = 3  # the bundled model cannot be loaded
EXIT_INTERNAL = 70  # an unexpected internal error (EDGEBUNDLE_DEBUG=1 shows why)
