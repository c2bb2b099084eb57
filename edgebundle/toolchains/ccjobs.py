"""Compiles side by side for a source build in a Debian build root.

setuptools compiles an extension's C files one after the other, and Pillow's ``_imaging`` is one
extension of ~80 files: under QEMU that is ~4 minutes on one core while the others wait. ``cc-jobs``
(below), given to the build as its C compiler, starts each compile (``-c``) in the background, at
most one per core, and returns at once; anything else (a link) first waits for every compile it
started, then fails with the output of any that failed, or runs. setuptools never reads an object
file before it links, so the result is the same build.

Only for builds that never test their compiler's exit status (a configure-style probe would see
every compile succeed): pins.toml's ``[build-from-source-in-roots-jobs]`` names them.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from typing import Final

CC_JOBS: Final = PurePosixPath("/opt/edgebundle/bin/cc-jobs")
MAX_JOBS: Final = 8  # each compile is its own QEMU process: ~150-300 MB

SCRIPT: Final = r"""#!/bin/sh
# edgebundle's cc-jobs (edgebundle/toolchains/ccjobs.py): compiles in the background, at most
# $EDGEBUNDLE_CC_JOBS at once; a link waits for them all and fails if one did.
state=${EDGEBUNDLE_CC_STATE:-/tmp/cc-jobs}
jobs=${EDGEBUNDLE_CC_JOBS:-2}
cc=${EDGEBUNDLE_CC:-gcc}
mkdir -p "$state"
for arg; do
    [ "$arg" = -c ] || continue
    while :; do
        slot=1
        while [ "$slot" -le "$jobs" ]; do
            if mkdir "$state/slot$slot" 2>/dev/null; then
                out=$(mktemp "$state/job.XXXXXX")
                ( "$cc" "$@" >"$out" 2>&1; echo $? >"$out.rc"; rmdir "$state/slot$slot" ) \
                    </dev/null >/dev/null 2>&1 &
                exit 0
            fi
            slot=$((slot + 1))
        done
        sleep 0.1
    done
done
while [ -n "$(ls -d "$state"/slot* 2>/dev/null)" ]; do sleep 0.1; done
# Links of several extensions may run at once (setuptools' --parallel): each takes the finished
# jobs it reports by renaming them, which only one can do.
failed=0
for rc in "$state"/job.*.rc; do
    out=${rc%.rc}
    mv "$rc" "$out.$$.taken" 2>/dev/null || continue
    cat "$out" >&2
    [ "$(cat "$out.$$.taken")" = 0 ] || failed=1
    rm -f "$out" "$out.$$.taken"
done
[ "$failed" = 0 ] || { echo "cc-jobs: a compile failed (its output is above)" >&2; exit 1; }
exec "$cc" "$@"
"""


def install(rootfs: Path) -> None:
    """Write ``cc-jobs`` into the root."""
    path = rootfs / CC_JOBS.relative_to("/")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(SCRIPT)
    path.chmod(0o755)


def environment(cores: int | None = None) -> dict[str, str]:
    """What makes a setuptools build in the root compile through ``cc-jobs`` (its link too: without
    LDSHARED, setuptools puts CC in front of the interpreter's link command)."""
    jobs = max(1, min(MAX_JOBS, cores if cores is not None else (os.cpu_count() or 1)))
    return {"CC": str(CC_JOBS), "EDGEBUNDLE_CC": "gcc", "EDGEBUNDLE_CC_JOBS": str(jobs)}
