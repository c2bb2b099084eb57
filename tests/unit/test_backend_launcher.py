"""The launcher's cache logic (edgebundle/launcher/launcher.c), on small synthetic binaries whose runner
is a shell script: unpack once per key, then only exec; concurrent first starts; leftovers of killed
runs; fallbacks; trust; pruning. Compiling it takes about a second; real binaries are tested in
tests/integration/test_lean.py."""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from edgebundle.backends import bundle, launcher, libc, runners
from edgebundle.elf import read_elf
from edgebundle.target import host_arch
from tests.conftest import in_ci

RUNNER_SCRIPT = """#!/bin/sh
printf 'args=%s\\n' "$*"
printf 'fd=%s\\n' "$_EDGEBUNDLE_PAYLOAD_FD"
printf 'self=%s\\n' "$(readlink /proc/$$/fd/$_EDGEBUNDLE_PAYLOAD_FD)"
printf 'dir=%s\\n' "$(cd "$(dirname "$0")" && pwd -P)"
[ -z "$EB_TEST_SLEEP" ] || sleep "$EB_TEST_SLEEP"
"""


@pytest.fixture(scope="module")
def launcher_exe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    missing = [tool for tool in ("musl-gcc", "zstd") if shutil.which(tool) is None]
    header = Path("/usr/include/zstd.h")
    if missing or not header.exists():
        if in_ci():
            pytest.fail(f"CI must have musl-tools, zstd and libzstd-dev (missing: {missing or header})")
        pytest.skip(f"needs musl-tools, zstd and libzstd-dev (missing: {missing or header})")
    out = tmp_path_factory.mktemp("launcher") / "launcher"
    subprocess.run(launcher.command("musl-gcc", launcher.SOURCE_DIR, out, host_arch()), check=True)
    assert read_elf(out).interp is None  # static: starts without any C library on the device
    return out


MakeBinary = Callable[..., Path]

# A program that says where it runs from and which loader started it (its first mapping named ld-).
PROGRAM = r"""
#include <stdio.h>
#include <string.h>
#include <unistd.h>
int main(int argc, char **argv) {
    char exe[4096] = "", line[8192];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) exe[n] = 0;
    printf("exe=%s\nargs=%d\n", exe, argc - 1);
    FILE *maps = fopen("/proc/self/maps", "r");
    while (maps && fgets(line, sizeof line, maps)) {
        char *path = strchr(line, '/');
        if (path && strstr(path, "/ld-")) { printf("loader=%s", path); break; }
    }
    return 0;
}
"""
HOST_LOADER = {"x86_64": "/lib64/ld-linux-x86-64.so.2", "aarch64": "/lib/ld-linux-aarch64.so.1"}[host_arch()]


@pytest.fixture(scope="module")
def placeholder_program(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """PROGRAM linked with the host's glibc, its loader replaced by libc.bundle's placeholder."""
    if shutil.which("gcc") is None or shutil.which("patchelf") is None:
        if in_ci():
            pytest.fail("CI must have gcc and patchelf")
        pytest.skip("needs gcc and patchelf")
    work = tmp_path_factory.mktemp("program")
    (work / "p.c").write_text(PROGRAM)
    subprocess.run(["gcc", "-O", "-o", str(work / "p"), str(work / "p.c")], check=True)
    name = Path(HOST_LOADER).name
    subprocess.run(["patchelf", "--set-interpreter", libc.placeholder(name), str(work / "p")], check=True)
    return work / "p"


@pytest.fixture
def make_binary(launcher_exe: Path, tmp_path: Path) -> MakeBinary:
    def make(
        name: str = "app",
        extra: bytes = b"",
        files: int = 1,
        program: Path | None = None,
        frames: int | None = runners.FILE_FRAMES,
    ) -> Path:
        """A binary whose runner is a tree of ``files`` data files, a symlink and ``run``: as builds
        write it (``frames`` files frames), or as one frame (None)."""
        tree = tmp_path / f"tree-{name}"
        (tree / "_internal").mkdir(parents=True)
        if program is None:
            (tree / "run").write_text(RUNNER_SCRIPT)
        else:  # an ELF program with its loader in _libc/ (libc.bundle's layout)
            shutil.copyfile(program, tree / "run")
            (tree / libc.LIBDIR).mkdir()
            loader = read_elf(program).interp
            assert loader is not None
            shutil.copyfile(HOST_LOADER, tree / libc.LIBDIR / Path(HOST_LOADER).name)
            (tree / libc.LIBDIR / Path(HOST_LOADER).name).chmod(0o755)
        (tree / "run").chmod(0o755)
        for i in range(files):
            (tree / "_internal" / f"data{i}.bin").write_bytes(extra + name.encode())
        (tree / "_internal" / "link").symlink_to("data0.bin")
        archive = tmp_path / f"{name}.ebr"
        if frames is None:
            with open(archive, "wb") as f:
                bundle.write_runner_archive(tree, f)
            subprocess.run(["zstd", "-q", "-f", "--check", str(archive)], check=True)
        else:
            runners.compress_runner(tree, Path(f"{archive}.zst"), tmp_path / "log", lambda _: None, frames)
        packed = Path(f"{archive}.zst").read_bytes()
        prefix = tmp_path / f"{name}.prefix"
        prefix.write_bytes(launcher_exe.read_bytes() + packed)
        out = tmp_path / name
        bundle.assemble(
            prefix, launcher_exe.stat().st_size, bundle.runner_key(packed), {"m.json": b"{}"}, out
        )
        out.chmod(0o755)
        return out

    return make


def env_for(tmp_path: Path, **extra: str) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return {"PATH": "/usr/bin:/bin", "HOME": str(home), "TMPDIR": str(tmp_path), **extra}


def start(binary: Path, env: dict[str, str], *args: str) -> dict[str, str]:
    proc = subprocess.run([str(binary), *args], capture_output=True, text=True, env=env, check=False)
    assert proc.returncode == 0, proc.stderr
    return dict(line.split("=", 1) for line in proc.stdout.splitlines())


def cache_run_dir(tmp_path: Path) -> Path:
    return tmp_path / "home" / ".cache" / "edgebundle" / "run"


def test_first_start_unpacks_later_starts_only_exec(make_binary: MakeBinary, tmp_path: Path) -> None:
    binary = make_binary()
    key = bundle.read_trailer(binary).key
    env = env_for(tmp_path)
    first = start(binary, env, "a", "b c")
    run = cache_run_dir(tmp_path)
    assert first["dir"] == str(run / key)
    assert first["args"] == "a b c"
    assert first["self"] == str(binary)  # the runtime reads its payload from the binary itself
    assert sorted(p.name for p in run.iterdir()) == [".lock", key]
    inode = (run / key).stat().st_ino
    for _ in range(3):
        assert start(binary, env)["dir"] == str(run / key)
    assert sorted(p.name for p in run.iterdir()) == [".lock", key]
    assert (run / key).stat().st_ino == inode  # not unpacked again
    assert stat.S_IMODE((run / key).stat().st_mode) == 0o700
    assert stat.S_IMODE((run / key / "run").stat().st_mode) == 0o500  # read-only, owner only
    assert os.readlink(run / key / "_internal" / "link") == "data0.bin"


def test_concurrent_first_starts_all_succeed_and_unpack_once(make_binary: MakeBinary, tmp_path: Path) -> None:
    binary = make_binary(extra=os.urandom(1 << 20), files=8)
    env = env_for(tmp_path)
    procs = [
        subprocess.Popen([str(binary)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        for _ in range(6)
    ]
    outputs = [p.communicate() for p in procs]
    assert [p.returncode for p in procs] == [0] * 6, [e for _, e in outputs]
    key = bundle.read_trailer(binary).key
    assert sorted(p.name for p in cache_run_dir(tmp_path).iterdir()) == [".lock", key]


def test_leftover_of_a_killed_unpack_is_removed(make_binary: MakeBinary, tmp_path: Path) -> None:
    binary = make_binary()
    key = bundle.read_trailer(binary).key
    run = cache_run_dir(tmp_path)
    run.mkdir(parents=True, mode=0o700)
    leftover = run / f".{key}.tmp.4242"  # what a SIGKILL in the middle of unpacking leaves
    (leftover / "_internal").mkdir(parents=True)
    (leftover / "_internal" / "half.so").write_bytes(b"x" * 1000)
    (leftover / "_internal" / "half.so").chmod(0o400)
    start(binary, env_for(tmp_path))
    assert sorted(p.name for p in run.iterdir()) == [".lock", key]


def test_sigkill_during_unpack_leaves_nothing_after_the_next_start(
    make_binary: MakeBinary, tmp_path: Path
) -> None:
    binary = make_binary(extra=os.urandom(4 << 20), files=12)
    env = env_for(tmp_path)
    key = bundle.read_trailer(binary).key
    run = cache_run_dir(tmp_path)
    for delay in (0.0, 0.005, 0.02):
        shutil.rmtree(run, ignore_errors=True)
        proc = subprocess.Popen([str(binary)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        start(binary, env)
        assert sorted(p.name for p in run.iterdir()) == [".lock", key]


def test_an_unusable_cache_dir_falls_back(make_binary: MakeBinary, tmp_path: Path) -> None:
    binary = make_binary()
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    env = env_for(tmp_path, EDGEBUNDLE_CACHE_DIR=str(blocker / "cache"), XDG_CACHE_HOME=str(blocker / "xdg"))
    env["HOME"] = str(blocker)
    got = start(binary, env)
    fallback = tmp_path / f"edgebundle-{os.geteuid()}" / "run"
    assert got["dir"] == str(fallback / bundle.read_trailer(binary).key)
    assert stat.S_IMODE(fallback.parent.stat().st_mode) == 0o700


def test_explicit_cache_dir_first(make_binary: MakeBinary, tmp_path: Path) -> None:
    binary = make_binary()
    got = start(binary, env_for(tmp_path, EDGEBUNDLE_CACHE_DIR=str(tmp_path / "c")))
    assert got["dir"] == str(tmp_path / "c" / "run" / bundle.read_trailer(binary).key)


def test_a_dir_others_can_write_is_not_trusted(make_binary: MakeBinary, tmp_path: Path) -> None:
    binary = make_binary()
    env = env_for(tmp_path, EDGEBUNDLE_CACHE_DIR=str(tmp_path / "shared"))
    (tmp_path / "shared" / "run").mkdir(parents=True)
    (tmp_path / "shared" / "run").chmod(0o777)
    got = start(binary, env)
    assert got["dir"].startswith(str(cache_run_dir(tmp_path)))


def test_a_foreign_tmp_fallback_is_not_used(make_binary: MakeBinary, tmp_path: Path) -> None:
    binary = make_binary()
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    (tmp_path / f"edgebundle-{os.geteuid()}").mkdir(mode=0o755)  # not private: someone else's doing
    env = {"PATH": "/usr/bin:/bin", "HOME": str(blocker), "TMPDIR": str(tmp_path)}
    proc = subprocess.run([str(binary)], capture_output=True, text=True, env=env, check=False)
    assert proc.returncode == 70
    line = proc.stderr.strip()
    assert line.startswith("app: error: cannot start: no usable cache directory")
    assert "EDGEBUNDLE_CACHE_DIR" in line
    assert len(proc.stderr.strip().splitlines()) == 1


def test_only_the_newest_runners_are_kept_unless_in_use(make_binary: MakeBinary, tmp_path: Path) -> None:
    env = env_for(tmp_path)
    run = cache_run_dir(tmp_path)
    old = make_binary("old")
    start(old, env)
    os.utime(run / bundle.read_trailer(old).key, (1, 1))  # the oldest
    busy = subprocess.Popen(
        [str(old)], stdout=subprocess.DEVNULL, env={**env, "EB_TEST_SLEEP": "30"}, start_new_session=True
    )
    try:
        time.sleep(0.3)
        binaries = [make_binary(f"v{i}") for i in range(3)]
        for b in binaries:
            start(b, env)
        keys = {p.name for p in run.iterdir() if not p.name.startswith(".")}
        newest = {bundle.read_trailer(b).key for b in binaries[-2:]}
        # the two newest, plus the old one that a running program holds
        assert keys == newest | {bundle.read_trailer(old).key}
    finally:
        os.killpg(busy.pid, signal.SIGKILL)  # the script and its sleep, which holds the lock too
        busy.wait()
    start(make_binary("v9"), env)
    assert bundle.read_trailer(old).key not in {p.name for p in run.iterdir()}


def test_a_broken_runner_is_replaced(make_binary: MakeBinary, tmp_path: Path) -> None:
    binary = make_binary()
    env = env_for(tmp_path)
    start(binary, env)
    key_dir = cache_run_dir(tmp_path) / bundle.read_trailer(binary).key
    (key_dir / "run").unlink()
    assert start(binary, env)["dir"] == str(key_dir)
    assert sorted(p.name for p in cache_run_dir(tmp_path).iterdir()) == [".lock", key_dir.name]


def test_truncated_binary_is_refused(make_binary: MakeBinary, tmp_path: Path) -> None:
    binary = make_binary()
    binary.write_bytes(binary.read_bytes()[:-10])
    proc = subprocess.run([str(binary)], capture_output=True, text=True, env=env_for(tmp_path), check=False)
    assert proc.returncode == 70
    assert "no edgebundle payload" in proc.stderr


def test_corrupt_runner_is_refused_and_leaves_nothing(make_binary: MakeBinary, tmp_path: Path) -> None:
    binary = make_binary(extra=b"z" * 100_000)
    t = bundle.read_trailer(binary)
    data = bytearray(binary.read_bytes())
    data[t.runner_offset + t.runner_size // 2] ^= 0xFF
    binary.write_bytes(bytes(data))
    env = env_for(tmp_path, EDGEBUNDLE_CACHE_DIR=str(tmp_path / "c"))
    proc = subprocess.run([str(binary)], capture_output=True, text=True, env=env, check=False)
    assert proc.returncode == 70
    assert "cannot unpack" in proc.stderr
    for run in (tmp_path / "c" / "run", cache_run_dir(tmp_path)):
        assert [p.name for p in run.iterdir()] == [".lock"]


@pytest.mark.parametrize("frames", [None, 1, 3])
def test_runners_in_one_or_several_frames_unpack_the_same_files(
    make_binary: MakeBinary, tmp_path: Path, frames: int | None
) -> None:
    """The launcher unpacks a runner of one zstd frame, or the directories, files in ``frames`` groups
    (on as many threads) and symlinks each in frames of their own, to the same files."""
    binary = make_binary(extra=os.urandom(300_000), files=7, frames=frames)
    tree = tmp_path / "tree-app"
    env = env_for(tmp_path, EDGEBUNDLE_DEBUG="1")
    proc = subprocess.run([str(binary)], capture_output=True, text=True, env=env, check=True)
    key_dir = cache_run_dir(tmp_path) / bundle.read_trailer(binary).key
    for i in range(7):
        name = f"_internal/data{i}.bin"
        assert (key_dir / name).read_bytes() == (tree / name).read_bytes()
    assert os.readlink(key_dir / "_internal" / "link") == "data0.bin"
    if frames == 3:
        assert "unpacking 3 frames on" in proc.stderr
    again = subprocess.run([str(binary)], capture_output=True, text=True, env=env, check=True)
    assert "unpacking" not in again.stderr  # the list of what was unpacked matches the directory


def parts_binary(launcher_exe: Path, tmp_path: Path, parts: list[bytes]) -> Path:
    """A binary whose runner is ``parts``, each compressed as a zstd frame of its own."""
    packed = b"".join(
        subprocess.run(["zstd", "-q", "--check", "-c"], input=part, capture_output=True, check=True).stdout
        for part in parts
    )
    prefix = tmp_path / "parts.prefix"
    prefix.write_bytes(launcher_exe.read_bytes() + packed)
    out = tmp_path / "parts"
    bundle.assemble(prefix, launcher_exe.stat().st_size, bundle.runner_key(packed), {"m.json": b"{}"}, out)
    out.chmod(0o755)
    return out


def record(kind: int, path: str, data: bytes = b"", mode: int = 0o644) -> bytes:
    return bundle.RECORD.pack(kind, mode, len(path.encode()), len(data)) + path.encode() + data


MAGIC, END = bundle.ARCHIVE_MAGIC, bundle.RECORD.pack(bundle.KIND_END, 0, 0, 0)
RUN = record(bundle.KIND_FILE, "run", RUNNER_SCRIPT.encode(), 0o755)
DIR = record(bundle.KIND_DIR, "d", mode=0o755)
FILE = record(bundle.KIND_FILE, "d/f", b"x" * 1000)
LINK = record(bundle.KIND_SYMLINK, "l", b"run", 0o777)


@pytest.mark.parametrize(
    "parts",
    [
        pytest.param([MAGIC + RUN, DIR + FILE, END], id="a directory past the first frame"),
        pytest.param([MAGIC + DIR, LINK, FILE, RUN + END], id="a symlink in a middle frame"),
        pytest.param([MAGIC + DIR, FILE + END, RUN + END], id="an end record in a middle frame"),
        pytest.param([MAGIC + DIR, FILE, RUN], id="no end record"),
        pytest.param([MAGIC + DIR, FILE[:30], FILE[30:] + RUN + END], id="a record cut between frames"),
        pytest.param([MAGIC + DIR + RUN + END, FILE + END], id="a frame after the end"),
        pytest.param([DIR + RUN, END], id="no magic"),
    ],
)
def test_frames_out_of_their_place_are_refused_and_leave_nothing(
    launcher_exe: Path, tmp_path: Path, parts: list[bytes]
) -> None:
    assert parts_binary(launcher_exe, tmp_path, [MAGIC + DIR, FILE, RUN + LINK + END]).exists()
    good = subprocess.run([str(tmp_path / "parts")], capture_output=True, env=env_for(tmp_path), check=False)
    assert good.returncode == 0, good.stderr  # the same records, each in its place
    binary = parts_binary(launcher_exe, tmp_path, parts)
    env = env_for(tmp_path, EDGEBUNDLE_CACHE_DIR=str(tmp_path / "c"))
    proc = subprocess.run([str(binary)], capture_output=True, text=True, env=env, check=False)
    assert proc.returncode == 70
    assert "cannot unpack" in proc.stderr
    assert [p.name for p in (tmp_path / "c" / "run").iterdir()] == [".lock"]


def test_closed_std_fds_are_not_given_to_the_runtime(make_binary: MakeBinary, tmp_path: Path) -> None:
    binary = make_binary()
    proc = subprocess.run(
        f"exec 0<&- 2>&-; {binary}",
        shell=True,
        capture_output=True,
        text=True,
        env=env_for(tmp_path),
        check=False,
    )
    assert proc.returncode == 0
    fields = dict(line.split("=", 1) for line in proc.stdout.splitlines())
    assert int(fields["fd"]) > 2


def damaged_starts(binary: Path, env: dict[str, str], key_dir: Path, damage: Callable[[], None]) -> str:
    """Start once (unpacks), damage the unpacked runner, start again: returns that start's stderr."""
    start(binary, env)
    damage()
    proc = subprocess.run([str(binary)], capture_output=True, text=True, env=env, check=False)
    assert proc.returncode == 0, proc.stderr
    assert dict(line.split("=", 1) for line in proc.stdout.splitlines())["dir"] == str(key_dir)
    return proc.stderr


@pytest.mark.parametrize(
    "what",
    ["deleted", "truncated", "emptied", "list deleted", "list truncated", "dir deleted", "file for a dir"],
)
def test_a_damaged_runner_is_unpacked_again_saying_so_once(
    make_binary: MakeBinary, tmp_path: Path, what: str
) -> None:
    binary = make_binary(extra=os.urandom(3000), files=3)
    env = env_for(tmp_path)
    run = cache_run_dir(tmp_path)
    key_dir = run / bundle.read_trailer(binary).key
    data1 = key_dir / "_internal" / "data1.bin"

    def damage() -> None:
        # what a tmp cleaner does: it may delete files (theirs are read-only, the directory is ours)
        if what == "deleted":
            data1.unlink()
        elif what == "truncated":
            data1.chmod(0o600)
            os.truncate(data1, 100)
        elif what == "emptied":
            for p in key_dir.iterdir():
                shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
        elif what == "list deleted":  # also what a runner unpacked by an older launcher looks like
            (key_dir / ".eb-files").unlink()
        elif what == "list truncated":
            (key_dir / ".eb-files").chmod(0o600)
            os.truncate(key_dir / ".eb-files", 40)
        elif what == "dir deleted":
            shutil.rmtree(key_dir / "_internal")
        else:
            shutil.rmtree(key_dir / "_internal")
            (key_dir / "_internal").write_text("")

    err = damaged_starts(binary, env, key_dir, damage)
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"app: warning: the unpacked runtime in {key_dir} was damaged (")
    assert lines[0].endswith("; unpacked it again")
    assert data1.read_bytes().endswith(b"app")
    assert data1.stat().st_size == 3003
    assert sorted(p.name for p in run.iterdir()) == [".lock", key_dir.name]  # the damaged copy is gone
    again = subprocess.run([str(binary)], capture_output=True, text=True, env=env, check=False)
    assert again.returncode == 0
    assert again.stderr == ""


def test_damage_names_what_is_missing(make_binary: MakeBinary, tmp_path: Path) -> None:
    binary = make_binary(files=2)
    env = env_for(tmp_path)
    key_dir = cache_run_dir(tmp_path) / bundle.read_trailer(binary).key
    err = damaged_starts(binary, env, key_dir, (key_dir / "_internal" / "data1.bin").unlink)
    assert "(_internal/data1.bin: No such file or directory)" in err


def test_concurrent_starts_on_a_damaged_runner_unpack_it_once(
    make_binary: MakeBinary, tmp_path: Path
) -> None:
    binary = make_binary(extra=os.urandom(1 << 20), files=8)
    env = env_for(tmp_path)
    run = cache_run_dir(tmp_path)
    key_dir = run / bundle.read_trailer(binary).key
    start(binary, env)
    (key_dir / "_internal" / "data3.bin").unlink()
    procs = [
        subprocess.Popen([str(binary)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
        for _ in range(6)
    ]
    outputs = [p.communicate() for p in procs]
    assert [p.returncode for p in procs] == [0] * 6, [e for _, e in outputs]
    warnings = [line for _, err in outputs for line in err.splitlines()]
    assert len(warnings) == 1, warnings
    assert "unpacked it again" in warnings[0]
    assert sorted(p.name for p in run.iterdir()) == [".lock", key_dir.name]
    assert (key_dir / "_internal" / "data3.bin").is_file()


def test_an_intact_start_reads_only_the_list(make_binary: MakeBinary, tmp_path: Path) -> None:
    """The check stats; it never opens a runner file but the list (that would cost a start its time)."""
    if shutil.which("strace") is None:
        pytest.skip("needs strace")
    binary = make_binary(files=3)
    env = env_for(tmp_path)
    start(binary, env)
    trace = tmp_path / "trace"
    subprocess.run(
        ["strace", "-f", "-e", "trace=openat,open", "-o", str(trace), str(binary)],
        env=env,
        capture_output=True,
        check=True,
    )
    opened = [line for line in trace.read_text().splitlines() if "data" in line and ".bin" in line]
    assert opened == []


def test_the_loader_placeholder_is_pointed_at_the_unpacked_loader(
    make_binary: MakeBinary, placeholder_program: Path, tmp_path: Path
) -> None:
    binary = make_binary(program=placeholder_program)
    key = bundle.read_trailer(binary).key
    got = start(binary, env_for(tmp_path), "x")
    where = cache_run_dir(tmp_path) / key
    assert got["exe"] == str(where / "run")
    assert got["loader"] == str(where / libc.LIBDIR / Path(HOST_LOADER).name)
    interp = read_elf(where / "run").interp
    assert interp is not None
    assert interp.size == libc.INTERP_SPACE
    assert stat.S_IMODE((where / "run").stat().st_mode) == 0o500  # its mode restored after the patch
    assert start(binary, env_for(tmp_path))["exe"] == str(where / "run")  # later starts: exec only


def test_a_cache_path_too_long_for_the_placeholder_is_skipped(
    make_binary: MakeBinary, placeholder_program: Path, tmp_path: Path
) -> None:
    binary = make_binary(program=placeholder_program)
    deep = tmp_path / "/".join(["d" * 200] * 5)  # > INTERP_SPACE bytes, < PATH_MAX
    proc = subprocess.run(
        [str(binary)],
        capture_output=True,
        text=True,
        env=env_for(tmp_path, EDGEBUNDLE_CACHE_DIR=str(deep), EDGEBUNDLE_DEBUG="1"),
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "cannot unpack or start the runner: Filename too long" in proc.stderr  # musl's strerror
    key = bundle.read_trailer(binary).key
    assert dict(line.split("=", 1) for line in proc.stdout.splitlines())["exe"] == str(
        cache_run_dir(tmp_path) / key / "run"
    )
    assert [p.name for p in (deep / "run").iterdir()] == [".lock"]  # nothing half-unpacked left
