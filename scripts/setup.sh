#!/usr/bin/env bash
# Set up a development checkout on Debian/Ubuntu: system packages (as root), then .venv with
# edgebundle installed editable plus its dev tools. Idempotent; safe without a terminal.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf 'setup: %s\n' "$*" >&2; }

# The targets pin Python 3.11 (tflite-runtime 2.14 has no wheels for newer Pythons); PyInstaller
# needs binutils (objdump, strip) and ldd.
PYTHON=${EDGEBUNDLE_PYTHON:-python3.11}
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    need=()
    command -v "$PYTHON" >/dev/null || need+=(python3.11 python3.11-venv python3.11-dev)
    command -v objdump >/dev/null || need+=(binutils)
    command -v ldd >/dev/null || need+=(libc-bin)
    # arm64 builds on an x86_64 host run in an emulated Debian root (edgebundle/toolchains/debroot.py):
    # mmdebstrap makes it, arch-test lets it check that QEMU runs arm64 (scripts/ci-services.sh
    # installs qemu-user-static and registers it with binfmt_misc).
    command -v mmdebstrap >/dev/null || need+=(mmdebstrap)
    command -v arch-test >/dev/null || need+=(arch-test)
    # A host whose apt sources have no Debian (an Ubuntu CI runner) gets build roots and the test
    # beds (scripts/testbeds.py: bullseye) from deb.debian.org, checked against Debian's keys.
    [ -f /usr/share/keyrings/debian-archive-keyring.gpg ] || need+=(debian-archive-keyring)
    if ! "$PYTHON" -c 'import venv, ensurepip' 2>/dev/null; then need+=(python3.11-venv); fi
    # Every binary starts with a small static C launcher (musl + zstd), and its runner is
    # compressed with the zstd tool (edgebundle/backends/launcher.py, runners.py); the tflite-runtime
    # targets' NumPy is built once from source without OpenBLAS (edgebundle/pins.toml), which needs
    # a C compiler and the Python headers.
    command -v gcc >/dev/null || need+=(gcc libc6-dev)
    # The default targets' Pillow is built from source with JPEG and zlib only (edgebundle/pins.toml).
    [ -f /usr/include/jpeglib.h ] || need+=(libjpeg-dev)
    [ -f /usr/include/zlib.h ] || need+=(zlib1g-dev)
    command -v musl-gcc >/dev/null || need+=(musl-tools)
    [ -f /usr/include/zstd.h ] || need+=(libzstd-dev)
    command -v zstd >/dev/null || need+=(zstd)
    # patchelf points a runner at the C library it carries (edgebundle/backends/libc.py); Nuitka
    # rewrites RPATHs with it too; ccache makes Nuitka's repeat compiles fast.
    command -v patchelf >/dev/null || need+=(patchelf)
    command -v ccache >/dev/null || need+=(ccache)
    if ! "$PYTHON" -c 'import os, sysconfig; assert os.path.isfile(os.path.join(sysconfig.get_paths()["include"], "Python.h"))' 2>/dev/null; then
        need+=(python3.11-dev)
    fi
    if [ ${#need[@]} -gt 0 ]; then
        say "apt-get install ${need[*]}"
        apt-get update -qq </dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" \
            </dev/null >/dev/null
    fi
fi
command -v "$PYTHON" >/dev/null || { say "$PYTHON not found: install Python 3.11 (apt-get install python3.11-venv)"; exit 1; }

if [ ! -x .venv/bin/python ]; then
    say "creating .venv with $PYTHON"
    "$PYTHON" -m venv .venv
fi
stamp=.venv/.edgebundle-setup
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    say "installing edgebundle (editable) with its dev tools into .venv"
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[dev,pyinstaller]'
    touch "$stamp"
fi
