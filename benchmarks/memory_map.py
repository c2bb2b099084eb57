"""Where a binary's peak resident memory sits, mapping by mapping: the program is started ``--runs``
times while ``/proc/PID/smaps`` is read in a loop, and the snapshot with the largest total is split
into the files mapped (libraries: shared, clean, reclaimable pages), the C heap and the anonymous
mappings (Python's object arenas, the model's working memory, decoded images).

    .venv/bin/python benchmarks/memory_map.py [--runs 5] [--top 16] -- dist/face IMAGE

Polling misses a peak shorter than one read of smaps (~1 ms), so the kernel's own high-water mark
(``ru_maxrss`` of the child) is printed beside it. Which code made an anonymous mapping is not in
smaps; ``benchmarks/results/memory-map.md`` shows how gdb answers that.
"""

from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys

Mapping = tuple[str, str, int, int, int]  # (name, perms, size KiB, Rss KiB, Private_Dirty KiB)


def snapshot(pid: int) -> list[Mapping] | None:
    try:
        with open(f"/proc/{pid}/smaps", encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        return None
    maps: list[Mapping] = []
    for line in text.splitlines():
        key, _, rest = line.partition(" ")
        if not key.endswith(":"):  # "start-end perms offset dev inode [path]"
            fields = line.split(None, 5)
            start, _, end = fields[0].partition("-")
            size = (int(end, 16) - int(start, 16)) // 1024
            maps.append((fields[5].strip() if len(fields) > 5 else "", fields[1], size, 0, 0))
        elif maps and key in ("Rss:", "Private_Dirty:"):
            name, perms, size, rss, dirty = maps[-1]
            value = int(rest.split()[0])
            maps[-1] = (name, perms, size, value, dirty) if key == "Rss:" else (name, perms, size, rss, value)
    return maps


def peak_of_one_run(argv: list[str]) -> tuple[list[Mapping], int]:
    """The largest snapshot of one run, and the kernel's peak (KiB)."""
    child = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
    best: list[Mapping] = []
    best_kib = 0
    while True:
        maps = snapshot(child.pid) or []
        total = sum(m[3] for m in maps)
        if total > best_kib:
            best, best_kib = maps, total
        done, status, usage = os.wait4(child.pid, os.WNOHANG)
        if done:
            if os.waitstatus_to_exitcode(status) != 0:
                sys.exit(f"memory_map: {argv[0]} exited with {os.waitstatus_to_exitcode(status)}")
            return best, usage.ru_maxrss


def table(maps: list[Mapping], hwm: int, top: int) -> str:
    files: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0])
    anonymous = []
    for name, _perms, size, rss, dirty in maps:
        if name.startswith("/"):
            files[os.path.basename(name)][0] += rss
            files[os.path.basename(name)][1] += dirty
        elif rss:
            anonymous.append((rss, size, name or "anonymous"))
    file_kib = sum(rss for rss, _ in files.values())
    anon_kib = sum(rss for rss, _, _ in anonymous)
    lines = [
        f"peak (polled) {(file_kib + anon_kib) / 1024:.1f} MiB = files {file_kib / 1024:.1f} MiB + "
        f"anonymous {anon_kib / 1024:.1f} MiB; kernel's peak (ru_maxrss) {hwm / 1024:.1f} MiB",
        "",
        "| mapping | resident KiB | of which private dirty KiB |",
        "|---|---:|---:|",
    ]
    for name, (rss, dirty) in sorted(files.items(), key=lambda kv: -kv[1][0])[:top]:
        lines.append(f"| {name} | {rss} | {dirty} |")
    for rss, size, name in sorted(anonymous, reverse=True)[:top]:
        lines.append(f"| {name} ({size} KiB mapped) | {rss} | {rss} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--top", type=int, default=16, help="rows of each kind (default 16)")
    parser.add_argument("argv", nargs="+", metavar="-- BINARY [ARGS]")
    args = parser.parse_args()
    runs = [peak_of_one_run(args.argv) for _ in range(args.runs)]
    # the median run by polled total: one run's mappings, not a mix of several
    runs.sort(key=lambda run: sum(m[3] for m in run[0]))
    maps, hwm = runs[len(runs) // 2]
    print(f"{' '.join(args.argv)}: median of {args.runs} runs\n")
    print(table(maps, hwm, args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
