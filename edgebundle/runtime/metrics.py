"""``--serve``'s counters and latency histograms, rendered in the Prometheus text format 0.0.4."""

from __future__ import annotations

import os
import threading
import time
from bisect import bisect_left
from collections.abc import Collection
from typing import TYPE_CHECKING

from .memory import DecodeBudget
from .workers import Job

if TYPE_CHECKING:
    from .manifest import Manifest

# Latency histogram buckets, seconds (Prometheus ``le`` bounds).
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Histogram:
    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.sum = 0.0

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
    """Counters and histograms behind one lock, rendered in the Prometheus text format 0.0.4."""

    def __init__(self, manifest: Manifest, workers: int, paths: Collection[str]) -> None:
        self._lock = threading.Lock()
        self.paths = paths  # requests to any other path are counted as "other"
        self.requests: dict[tuple[str, int], int] = {}
        self.inference = Histogram()
        self.request_duration = Histogram()
        self.in_flight = 0
        self.connections = 0
        self.workers = workers
        self.started = time.time()
        model = manifest["model"]
        self.sha256 = model["sha256"]
        interp = manifest["interpreter"]
        self.info_labels = (
            f'model_sha256="{self.sha256}",model_file="{_escape(model.get("source_name", ""))}",'
            f'interpreter="{_escape(interp["name"])}",interpreter_version="{_escape(interp["version"])}"'
        )

    def count(self, path: str, status: int, seconds: float | None) -> None:
        key = (path if path in self.paths else "other", status)
        with self._lock:
            self.requests[key] = self.requests.get(key, 0) + 1
            if seconds is not None:
                self.request_duration.observe(seconds)

    def observe_inference(self, job: Job) -> None:
        if job.result is not None:
            with self._lock:
                self.inference.observe(job.infer_ms / 1000.0)

    def add_in_flight(self, delta: int) -> None:
        with self._lock:
            self.in_flight += delta

    def add_connections(self, delta: int) -> None:
        with self._lock:
            self.connections += delta

    def render(self, ready: bool, body_bytes: int, budget: DecodeBudget | None = None) -> str:
        """``ready`` and ``body_bytes`` (request bodies held) are the server's own state, which only
        the event loop's thread, the one rendering, changes; ``budget`` the workers' decodes."""
        with self._lock:
            out = [
                "# HELP ebrt_http_requests_total HTTP requests answered, by route and status code.",
                "# TYPE ebrt_http_requests_total counter",
            ]
            for (path, status), n in sorted(self.requests.items()):
                out.append(f'ebrt_http_requests_total{{path="{path}",code="{status}"}} {n}')
            out += [
                "# HELP ebrt_inference_duration_seconds Interpreter invoke time per inference.",
                "# TYPE ebrt_inference_duration_seconds histogram",
                *self.inference.render("ebrt_inference_duration_seconds", f'model_sha256="{self.sha256}"'),
                "# HELP ebrt_request_duration_seconds /v1/infer time from request received to answer.",
                "# TYPE ebrt_request_duration_seconds histogram",
                *self.request_duration.render("ebrt_request_duration_seconds", 'path="/v1/infer"'),
                "# HELP ebrt_inference_requests_in_flight /v1/infer requests received and not yet answered.",
                "# TYPE ebrt_inference_requests_in_flight gauge",
                f"ebrt_inference_requests_in_flight {self.in_flight}",
                "# HELP ebrt_open_connections Client connections open.",
                "# TYPE ebrt_open_connections gauge",
                f"ebrt_open_connections {self.connections}",
                "# HELP ebrt_request_body_bytes_in_flight Request body bytes admitted, being read or held.",
                "# TYPE ebrt_request_body_bytes_in_flight gauge",
                f"ebrt_request_body_bytes_in_flight {body_bytes}",
            ]
        out += [
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
            "# HELP process_resident_memory_bytes Resident memory of this process.",
            "# TYPE process_resident_memory_bytes gauge",
            f"process_resident_memory_bytes {_rss_bytes()}",
            "# HELP process_cpu_seconds_total User and system CPU time of this process.",
            "# TYPE process_cpu_seconds_total counter",
            f"process_cpu_seconds_total {sum(os.times()[:2]):.2f}",
            "# HELP process_start_time_seconds Start time of this process, Unix epoch seconds.",
            "# TYPE process_start_time_seconds gauge",
            f"process_start_time_seconds {self.started:.3f}",
        ]
        return "\n".join(out) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0
