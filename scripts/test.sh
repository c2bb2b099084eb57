#!/usr/bin/env bash
# Set up and run everything CI runs: ruff (lint + format), mypy --strict, the import contracts of
# pyproject.toml (lint-imports: the layers of ARCHITECTURE.md), and the whole pytest suite
# including the real tier (PyInstaller builds, QEMU runs, an sshd on loopback, binaries run in the
# bullseye and bare roots of scripts/testbeds.py, made on first use and cached, deploys to its
# x86_64 and arm64 gateways booted with systemd-nspawn).
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -m "not build and not device"` for the fast tier.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
if [ "$(id -u)" -eq 0 ]; then
    bash scripts/ci-services.sh   # sshd on 127.0.0.1, qemu-aarch64 via binfmt_misc
else
    echo "test: not root: device tests that need sshd/binfmt will skip (they fail under CI=true)" >&2
fi

.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/lint-imports
exec .venv/bin/pytest "$@"
