"""``--serve``'s counters and latency histograms, rendered in the Prometheus text format 0.0.4."""

from __future__ import annotations

import os
import threading
from bisect import bisect_left
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING

from .memory import DecodeBudget
from .shared import BUCKETS, CONNECTIONS, HIST, IN_FLIGHT, REQUESTS, STARTED, STATUS_INDEX, STATUSES, Shared
from .workers import Job

if TYPE_CHECKING:
    from .manifest import Manifest
    from .shared import SharedDecodeBudget


class Histogram:
    """Cumulative buckets, +Inf, sum; ``counts`` has one more entry than BUCKETS (over the last)."""

    def __init__(self, counts: Sequence[float] | None = None, total: float = 0.0) -> None:
        self.counts = [int(c) for c in counts] if counts is not None else [0] * (len(BUCKETS) + 1)
        self.sum = total

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(BUCKETS, seconds)] += 1
        self.sum += seconds

    def render(self, name: str, labels: str) -> list[str]:
        sep = "," if labels else ""
        lines, total = [], 0
        for bound, count in zip(BUCKETS, self.counts, strict=False):
            total += count
            lines.append(f'{name}_bucket{{{labels}{sep}le="{bound}"}} {total}')
        total += self.counts[-1]
        lines.append(f'{name}_bucket{{{labels}{sep}le="+Inf"}} {total}')
        braced = f"{{{labels}}}" if labels else ""
        lines.append(f"{name}_sum{braced} {self.sum:.6f}")
        lines.append(f"{name}_count{braced} {total}")
        return lines


class Metrics:
    """This process's counters and histograms (its slot of ``shared``, written behind one lock),
    rendered summed over every process's slot in the Prometheus text format 0.0.4."""

    def __init__(
        self,
        manifest: Manifest,
        workers: int,
        paths: Collection[str],
        shared: Shared | None = None,
        slot: int = 0,
    ) -> None:
        self._lock = threading.Lock()
        # requests to any other path are counted as "other"
        self.shared = shared if shared is not None else Shared([*paths, "other"], 1, processes=False)
        self.slot = slot
        self.base = self.shared.base(slot)
        self.words = self.shared.words
        self.workers = workers
        model = manifest["model"]
        self.sha256 = model["sha256"]
        interp = manifest["interpreter"]
        self.info_labels = (
            f'model_sha256="{self.sha256}",model_file="{_escape(model.get("source_name", ""))}",'
            f'interpreter="{_escape(interp["name"])}",interpreter_version="{_escape(interp["version"])}"'
        )
        if shared is None:
            self.shared.reset(slot, os.getpid())

    def count(self, path: str, status: int, seconds: float | None) -> None:
        shared = self.shared
        index = shared.path_index.get(path, shared.path_index["other"])
        field = self.base + REQUESTS + index * len(STATUSES) + STATUS_INDEX.get(status, STATUS_INDEX[500])
        with self._lock:
            self.words[field] += 1
            if seconds is not None:
                self._observe(shared.request_duration, seconds)

    def _observe(self, field: int, seconds: float) -> None:
        base = self.base + field
        self.words[base + bisect_left(BUCKETS, seconds)] += 1
        self.words[base + HIST - 1] += seconds

    def observe_inference(self, job: Job) -> None:
        if job.result is not None:
            with self._lock:
                self._observe(self.shared.inference, job.infer_ms / 1000.0)

    def add_in_flight(self, delta: int) -> None:
        with self._lock:
            self.words[self.base + IN_FLIGHT] += delta

    def add_connections(self, delta: int) -> None:
        with self._lock:
            self.words[self.base + CONNECTIONS] += delta

    def _histogram(self, field: int) -> Histogram:
        shared = self.shared
        sums = [sum(self.words[shared.base(s) + field + i] for s in range(shared.slots)) for i in range(HIST)]
        return Histogram(sums[:-1], sums[-1])

    def render(
        self, ready: bool, body_bytes: int, budget: DecodeBudget | SharedDecodeBudget | None = None
    ) -> str:
        """The whole server's: every process's slot summed. ``ready`` and ``body_bytes`` (request
        bodies held, all processes) come from the server; ``budget`` the workers' decodes."""
        shared = self.shared
        out = [
            "# HELP ebrt_http_requests_total HTTP requests answered, by route and status code.",
            "# TYPE ebrt_http_requests_total counter",
        ]
        counts = []
        for p, path in enumerate(shared.paths):
            for i, status in enumerate(STATUSES):
                n = int(shared.total(REQUESTS + p * len(STATUSES) + i))
                if n:
                    counts.append((path, status, n))
        for path, status, n in sorted(counts):
            out.append(f'ebrt_http_requests_total{{path="{path}",code="{status}"}} {n}')
        started = min(
            (w for s in range(shared.slots) if (w := self.words[shared.base(s) + STARTED])), default=0.0
        )
        rss, cpu = _tree_usage(shared.pids())
        out += [
            "# HELP ebrt_inference_duration_seconds Interpreter invoke time per inference.",
            "# TYPE ebrt_inference_duration_seconds histogram",
            *self._histogram(shared.inference).render(
                "ebrt_inference_duration_seconds", f'model_sha256="{self.sha256}"'
            ),
            "# HELP ebrt_request_duration_seconds /v1/infer time from request received to answer.",
            "# TYPE ebrt_request_duration_seconds histogram",
            *self._histogram(shared.request_duration).render(
                "ebrt_request_duration_seconds", 'path="/v1/infer"'
            ),
            "# HELP ebrt_inference_requests_in_flight /v1/infer requests received and not yet answered.",
            "# TYPE ebrt_inference_requests_in_flight gauge",
            f"ebrt_inference_requests_in_flight {int(shared.total(IN_FLIGHT))}",
            "# HELP ebrt_open_connections Client connections open.",
            "# TYPE ebrt_open_connections gauge",
            f"ebrt_open_connections {int(shared.total(CONNECTIONS))}",
            "# HELP ebrt_request_body_bytes_in_flight Request body bytes admitted, being read or held.",
            "# TYPE ebrt_request_body_bytes_in_flight gauge",
            f"ebrt_request_body_bytes_in_flight {body_bytes}",
            "# HELP ebrt_decode_bytes_in_flight Decoded image bytes being held (--max-decode-mb).",
            "# TYPE ebrt_decode_bytes_in_flight gauge",
            f"ebrt_decode_bytes_in_flight {budget.used if budget else 0}",
            "# HELP ebrt_decodes_waiting Decodes waiting for --max-decode-mb to have room.",
            "# TYPE ebrt_decodes_waiting gauge",
            f"ebrt_decodes_waiting {budget.waiting if budget else 0}",
            "# HELP ebrt_workers Inference workers (one interpreter each).",
            "# TYPE ebrt_workers gauge",
            f"ebrt_workers {self.workers}",
            "# HELP ebrt_ready 1 when the model is loaded and the self-test passed.",
            "# TYPE ebrt_ready gauge",
            f"ebrt_ready {int(ready)}",
            "# HELP ebrt_model_info The bundled model and interpreter.",
            "# TYPE ebrt_model_info gauge",
            f"ebrt_model_info{{{self.info_labels}}} 1",
            "# HELP process_resident_memory_bytes Resident memory of the server's processes (their "
            "proportional set size summed: shared pages counted once).",
            "# TYPE process_resident_memory_bytes gauge",
            f"process_resident_memory_bytes {rss}",
            "# HELP process_cpu_seconds_total User and system CPU time of the server's processes.",
            "# TYPE process_cpu_seconds_total counter",
            f"process_cpu_seconds_total {cpu:.2f}",
            "# HELP process_start_time_seconds Start time of the server, Unix epoch seconds.",
            "# TYPE process_start_time_seconds gauge",
            f"process_start_time_seconds {started:.3f}",
        ]
        return "\n".join(out) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _tree_usage(pids: list[int]) -> tuple[int, float]:
    """(memory bytes, CPU seconds) of the server. One process: its resident set. Worker processes
    (``pids``, this one among them) and their supervisor (the parent): the sum of their proportional
    set sizes (shared pages counted once; smaps_rollup, Linux >= 4.14, else resident sets), and CPU
    including the exited workers the parent has reaped."""
    me, parent = os.getpid(), os.getppid()
    procs = {me, *pids}
    if len(procs) == 1:
        return _memory_bytes(me, proportional=False), sum(os.times()[:2])
    procs.add(parent)
    memory, ticks = 0, 0
    for pid in procs:
        memory += _memory_bytes(pid, proportional=True)
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
            if pid == parent:
                ticks += int(fields[13]) + int(fields[14])  # of its children it has reaped
        except (OSError, ValueError, IndexError):
            pass
    return memory, ticks / os.sysconf("SC_CLK_TCK")


def _memory_bytes(pid: int, proportional: bool) -> int:
    if proportional:
        try:
            with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        return int(line.split()[1]) * 1024
        except (OSError, ValueError, IndexError):
            pass
    try:
        with open(f"/proc/{pid}/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0
