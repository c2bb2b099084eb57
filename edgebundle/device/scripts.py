"""Everything that runs ON the device besides the binary: small POSIX shell scripts.

Why scripts and not commands pasted together: a device string, a file name or a temp dir may hold
spaces or shell metacharacters. Each script here is a constant; whatever varies reaches it only as a
positional parameter (``sh -c SCRIPT sh ARG...``), quoted once by the transport, and is only ever
used inside double quotes. They use nothing but POSIX sh builtins and commands busybox has (mktemp,
uname, cat, chmod, wc, tail, rm, kill, sleep), and Linux's /proc.

Every step runs in the private temp dir with TMPDIR pointing into it, so that whatever the binary
unpacks (a onefile bootloader's _MEIxxxxxx) goes where the cleanup removes it, even after a SIGKILL.
EDGEBUNDLE_CACHE_DIR points into it too: the launcher's runtime cache starts empty, so the cold run
pays the unpacking a first run after the copy pays on a real device (a cache left by an earlier
test of the same binary would hide it), and the device's own cache is left alone.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Script:
    """A constant script; ``name`` is what logs show instead of its text."""

    name: str
    text: str


# Prints "dir=PATH" and "machine=ARCH". No arguments.
SETUP = Script(
    "setup",
    r"""
umask 077
base=${TMPDIR:-/tmp}
d=$(mktemp -d "$base/edgebundle.XXXXXX" 2>/dev/null) || {
    d=$base/edgebundle.$$
    mkdir "$d" || exit 97
}
printf 'dir=%s\nmachine=%s\nkernel=%s\n' "$d" "$(uname -m)" "$(uname -r)"
# "glibc 2.36"; nothing on a device without glibc's getconf (musl, busybox-only)
printf 'libc=%s\n' "$(getconf GNU_LIBC_VERSION 2>/dev/null)"
""",
)

# $1 dir, $2 name inside it; the file's bytes on stdin. Prints the size written.
UPLOAD = Script(
    "upload",
    r"""
f=$1/$2
mkdir -p "${f%/*}" || exit 97
cat > "$f" || exit 97
chmod 700 "$f" || exit 97
wc -c < "$f"
""",
)

# $1 dir, then the command. The very first run after the copy, timed with the kernel's boot clock
# (/proc/uptime, 10 ms steps) since a shell has no finer clock and the binary must not run before it.
COLD = Script(
    "cold",
    r"""
d=$1
shift
cd "$d" || exit 97
TMPDIR=$d
EDGEBUNDLE_CACHE_DIR=$d/cache
export TMPDIR EDGEBUNDLE_CACHE_DIR
read t0 rest < /proc/uptime
"$@" > cold.out 2> cold.err < /dev/null
rc=$?
read t1 rest < /proc/uptime
printf 'cold %s %s %s\n' "$t0" "$t1" "$rc"
echo @@eb-stdout@@
tail -c 4000 cold.out
echo
echo @@eb-stderr@@
tail -c 4000 cold.err
""",
)

# $1 dir, then the command, which replaces the shell (its exit code is the step's).
RUN = Script(
    "run",
    r"""
d=$1
shift
cd "$d" || exit 97
TMPDIR=$d
EDGEBUNDLE_CACHE_DIR=$d/cache
export TMPDIR EDGEBUNDLE_CACHE_DIR
exec "$@" < /dev/null
""",
)

# $1 dir. Ends every process whose working directory is the dir (the measurer and its runs, which
# may sit in process groups of their own), SIGTERM first so that a onefile bootloader cleans up after
# itself, then removes the dir. Refuses anything that is not one of our dirs.
CLEANUP = Script(
    "cleanup",
    r"""
d=$1
case $d in
    /*/edgebundle.*) ;;
    *) echo "refusing to remove $d" >&2; exit 2 ;;
esac
[ -d "$d" ] || exit 0
real=$(cd -P "$d" && pwd -P) || exit 97
inside() {
    for p in /proc/[0-9]*; do
        [ "$(cd -P "$p/cwd" 2>/dev/null && pwd -P)" = "$real" ] && echo "${p#/proc/}"
    done
}
pids=$(inside)
if [ -n "$pids" ]; then
    kill -s TERM $pids 2>/dev/null
    i=0
    while [ $i -lt 5 ] && [ -n "$(inside)" ]; do
        sleep 1
        i=$((i + 1))
    done
    pids=$(inside)
    [ -z "$pids" ] || kill -s KILL $pids 2>/dev/null
fi
rm -rf "$d"
[ ! -e "$d" ]
""",
)

# Exit codes the scripts use for their own failures (never an exit code of the binary's steps).
EXIT_SCRIPT = 97

# Markers between the parts of COLD's output.
STDOUT_MARK = "@@eb-stdout@@"
STDERR_MARK = "@@eb-stderr@@"
