"""What runs ON a gateway during a deploy: constant POSIX shell scripts, arguments only as positional
parameters (see edgebundle/device/scripts.py for why). Commands: what busybox has (uname, df, awk,
readlink, sha256sum, mktemp, mv, ln, rm, grep) and, for services, systemctl.

The layout on the device, for NAME under PREFIX:

    PREFIX/NAME/releases/SHA12/NAME   each release, SHA12 = the first 12 hex digits of its sha256
    PREFIX/NAME/current               -> releases/SHA12/NAME, replaced by a rename (atomic)
    PREFIX/NAME/history               the releases made current, oldest first, each once
"""

from __future__ import annotations

from ..device.scripts import Script

# $1 PREFIX, $2 NAME, $3 SHA12. key=value lines: what a deploy checks before anything changes.
PREFLIGHT = Script(
    "preflight",
    r"""
d="$1/$2"
printf 'machine=%s\nkernel=%s\n' "$(uname -m)" "$(uname -r)"
printf 'libc=%s\n' "$(getconf GNU_LIBC_VERSION 2>/dev/null)"
if [ -d /run/systemd/system ]; then echo systemd=yes; else echo systemd=no; fi
if [ "$(id -u)" = 0 ]; then echo root=yes; else echo root=no; fi
if command -v sha256sum >/dev/null 2>&1; then echo sha256sum=yes; else echo sha256sum=no; fi
p=$1
while [ ! -d "$p" ]; do p=$(dirname "$p"); done
printf 'free_kb=%s\n' "$(df -Pk "$p" | awk 'NR == 2 { print $4 }')"
[ -L "$d/current" ] && printf 'current=%s\n' "$(readlink "$d/current")"
[ -f "$d/releases/$3/$2" ] && printf 'have=%s\n' "$(sha256sum "$d/releases/$3/$2" | cut -d ' ' -f 1)"
exit 0
""",
)

# $1 PREFIX, $2 NAME, $3 SHA256; the binary on stdin. Written to a temporary name, checked, then
# renamed to releases/SHA12/NAME. Prints "installed".
INSTALL = Script(
    "install",
    r"""
set -e
d="$1/$2"
r="$d/releases/$(printf %.12s "$3")"
mkdir -p "$d/releases"
chmod 755 "$1" "$d" "$d/releases" 2>/dev/null || true
t="$d/releases/.upload.$$"
trap 'rm -rf "$t"' EXIT
mkdir "$t"
cat > "$t/$2"
got=$(sha256sum "$t/$2" | cut -d ' ' -f 1)
if [ "$got" != "$3" ]; then
    echo "the copy's sha256 is $got, expected $3 (transfer damaged)" >&2
    exit 96
fi
chmod 755 "$t" "$t/$2"
rm -rf "$r"
mv "$t" "$r"
echo installed
""",
)

# $1 the release's binary. Its --self-test on the device, with a runtime cache of its own (removed).
SELFTEST = Script(
    "self-test",
    r"""
c=$(mktemp -d "${TMPDIR:-/tmp}/edgebundle-deploy.XXXXXX") || exit 97
EDGEBUNDLE_CACHE_DIR="$c" "$1" --self-test
rc=$?
rm -rf "$c"
exit $rc
""",
)

# $1 PREFIX, $2 NAME, $3 SHA12 to make current, $4 how many releases to keep. current is replaced by a
# rename; the release moves to the end of history, which keeps the newest $4; every other release
# directory is removed (older ones, and uploads that never became current). Prints "previous=SHA12"
# (what was current, if anything).
SWITCH = Script(
    "switch",
    r"""
set -e
d="$1/$2"
[ -f "$d/releases/$3/$2" ] || { echo "release $3 is not installed" >&2; exit 95; }
if [ -L "$d/current" ]; then
    old=$(readlink "$d/current")
    old=${old#releases/}
    printf 'previous=%s\n' "${old%%/*}"
fi
rm -f "$d/.current.new"
ln -s "releases/$3/$2" "$d/.current.new"
mv -f "$d/.current.new" "$d/current"
{ [ -f "$d/history" ] && grep -vx "$3" "$d/history" || true; echo "$3"; } | tail -n "$4" > "$d/.history.new"
mv -f "$d/.history.new" "$d/history"
keep=$(cat "$d/history")
for r in "$d"/releases/*; do
    [ -d "$r" ] || continue
    case " $(echo $keep) " in *" ${r##*/} "*) ;; *) rm -rf "$r" ;; esac
done
""",
)

# $1 unit name, $2 unit file path; the unit's text on stdin. Written atomically and daemon-reload
# when it differs from what is there; enabled. Prints "unit=changed" or "unit=same".
WRITE_UNIT = Script(
    "write-unit",
    r"""
set -e
t="$2.new.$$"
trap 'rm -f "$t"' EXIT
cat > "$t"
chmod 644 "$t"
if [ -f "$2" ] && cmp -s "$t" "$2"; then
    echo unit=same
else
    mv -f "$t" "$2"
    systemctl daemon-reload
    echo unit=changed
fi
systemctl enable "$1" >/dev/null 2>&1
""",
)

# $1 unit file path. The unit's text as it is now ("" when there is none): what a failed deploy puts back.
READ_UNIT = Script(
    "read-unit",
    r"""
[ -f "$1" ] && cat "$1"
exit 0
""",
)

# $1 unit file path, $2 a release directory. The unit the release has just been proven ready with, kept
# beside it (releases/SHA12/unit.service) for `edgebundle rollback` to put back with the release.
SAVE_UNIT = Script(
    "save-unit",
    r"""
set -e
cp "$1" "$2/.unit.new"
mv -f "$2/.unit.new" "$2/unit.service"
""",
)

# $1 a release directory, $2 unit file path. The unit saved with the release (SAVE_UNIT) installed
# again, when there is one and it differs (a rollback to a release that served with other options).
RESTORE_UNIT = Script(
    "restore-unit",
    r"""
set -e
[ -f "$1/unit.service" ] || exit 0
if [ -f "$2" ] && cmp -s "$1/unit.service" "$2"; then exit 0; fi
cp "$1/unit.service" "$2.new.$$"
mv -f "$2.new.$$" "$2"
systemctl daemon-reload
""",
)

# $1 unit name, $2 unit file path. Stop, disable and remove the unit: a release that never became
# ready, deployed where no service ran before, leaves no service behind.
REMOVE_UNIT = Script(
    "remove-unit",
    r"""
systemctl stop "$1" 2>/dev/null
systemctl disable "$1" >/dev/null 2>&1
rm -f "$2"
systemctl daemon-reload
systemctl reset-failed "$1" 2>/dev/null
exit 0
""",
)

# $1 PREFIX, $2 NAME, $3 SHA12 of a release that failed. Dropped from history (so that neither status
# nor rollback offers it as a previous release); when it is current (a first deploy), current is
# removed too. Its directory goes with the next switch's clean-up.
FORGET = Script(
    "forget",
    r"""
set -e
d="$1/$2"
if [ -f "$d/history" ]; then
    grep -vx "$3" "$d/history" > "$d/.history.new" || true
    mv -f "$d/.history.new" "$d/history"
fi
if [ -L "$d/current" ] && [ "$(readlink "$d/current")" = "releases/$3/$2" ]; then
    rm -f "$d/current"
fi
""",
)

# $1 unit name. Restart it: with Type=notify this returns once the binary said READY=1 (model loaded,
# self-test passed) or failed/timed out. Prints the unit's state either way.
RESTART = Script(
    "restart",
    r"""
systemctl restart "$1"
rc=$?
printf 'active=%s\n' "$(systemctl is-active "$1")"
exit $rc
""",
)

# $1 PREFIX, $2 NAME. key=value lines for `edgebundle status`.
STATUS = Script(
    "status",
    r"""
d="$1/$2"
u="edgebundle-$2.service"
[ -L "$d/current" ] && printf 'current=%s\n' "$(readlink "$d/current")"
[ -f "$d/history" ] && sed 's/^/history=/' "$d/history"
unit=""
command -v systemctl >/dev/null 2>&1 && unit=$(systemctl show -p FragmentPath --value "$u" 2>/dev/null)
if [ -n "$unit" ]; then
    printf 'active=%s\n' "$(systemctl is-active "$u")"
    printf 'since=%s\n' "$(systemctl show -p ActiveEnterTimestamp --value "$u")"
    pid=$(systemctl show -p MainPID --value "$u")
    if [ "${pid:-0}" != 0 ] && [ -r "/proc/$pid/status" ]; then
        awk '/^VmRSS:/ { print "rss_kb=" $2 }' "/proc/$pid/status"
    fi
    printf 'exec=%s\n' "$(systemctl show -p ExecStart --value "$u" | tr '\n' ' ')"
fi
exit 0
""",
)

# $1 PREFIX, $2 NAME. The release before the current one in history ("" when there is none).
PREVIOUS = Script(
    "previous",
    r"""
d="$1/$2"
[ -L "$d/current" ] || { echo "nothing deployed as $2 under $1" >&2; exit 94; }
c=$(readlink "$d/current"); c=${c#releases/}; c=${c%%/*}
p=""
if [ -f "$d/history" ]; then
    p=$(grep -vx "$c" "$d/history" | while read -r r; do
        if [ -f "$d/releases/$r/$2" ]; then echo "$r"; fi
    done | tail -n 1)
fi
printf 'current=%s\nprevious=%s\n' "$c" "$p"
""",
)
