"""``--serve`` with worker processes (``--workers N``, N > 1; supervisor.py): the real binary on a
loopback port, real HTTP clients. One worker killed is replaced while the others serve; a drain waits
for the requests in flight in every worker; /metrics counts the requests of every worker; systemd
hears READY=1 only once every worker is ready; ``--workers 1`` stays one process."""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path
from typing import Any

import pytest

from edgebundle.runtime import measure
from tests.conftest import NotifyListener
from tests.integration import test_serve
from tests.integration.conftest import Built
from tests.integration.test_serve import (
    SEVEN,
    WAIT_S,
    Served,
    _wait_until,
)

pytestmark = pytest.mark.build

serve = test_serve.serve  # the fixture: a binary's --serve, stopped (its logs checked) after the test


DELAY = "X-Ebrt-Test-Delay-Ms"


def children(pid: int) -> set[int]:
    return set(measure.children(pid))


def infer_pids(server: Served) -> list[int]:
    """The worker pid of every /v1/infer request in the access log, in order."""
    return [r["pid"] for r in server.logs() if r["event"] == "request" and r["path"] == "/v1/infer"]


def concurrently(server: Served, count: int, delay_ms: int) -> list[tuple[int, dict[str, Any]]]:
    """``count`` requests at once, each held ``delay_ms`` in its worker (the test hook)."""
    results: list[tuple[int, dict[str, Any]]] = []
    threads = []
    for _ in range(count):
        thread = threading.Thread(
            target=lambda: results.append(server.infer(SEVEN.read_bytes(), {DELAY: str(delay_ms)}))
        )
        thread.start()
        threads.append(thread)
        # the next one arrives once this one is in flight: the least busy worker takes it
        held = len(threads)
        _wait_until(lambda: server.metric("ebrt_inference_requests_in_flight") >= held)  # noqa: B023
    for thread in threads:
        thread.join(WAIT_S)
    return results


def test_a_killed_worker_is_replaced_while_the_others_serve(serve: Any) -> None:
    server = serve("--workers", "2")
    ready = server.wait_for_log("ready")
    workers = set(ready["pids"])
    assert workers == children(server.proc.pid)
    victim = min(workers)
    os.kill(victim, signal.SIGKILL)
    for _ in range(20):  # never a failed request: the other worker takes them all meanwhile
        status, body = server.infer(SEVEN.read_bytes())
        assert status == 200, body
    died = server.wait_for_log("worker_died")
    assert died["worker_pid"] == victim
    _wait_until(lambda: len(children(server.proc.pid) - workers) == 1)
    new = (children(server.proc.pid) - workers).pop()
    _wait_until(lambda: any(r["event"] == "worker_ready" and r["pid"] == new for r in server.logs()))
    assert victim not in children(server.proc.pid)
    assert server.request("GET", "/readyz")[0] == 200
    assert server.metric("ebrt_workers") == 2
    for _ in range(10):
        assert server.infer(SEVEN.read_bytes())[0] == 200
    assert server.stop() == 0


def test_sigterm_drains_the_requests_in_flight_in_every_worker(serve: Any) -> None:
    server = serve("--workers", "2", "--access-log", hooks=True)
    got: list[tuple[int, dict[str, Any]]] = []
    threads = []
    for n in (1, 2):  # the second arrives once the first is in flight: the other worker takes it
        thread = threading.Thread(
            target=lambda: got.append(server.infer(SEVEN.read_bytes(), {DELAY: "3000"}))
        )
        thread.start()
        threads.append(thread)
        _wait_until(lambda n=n: server.metric("ebrt_inference_requests_in_flight") == n)
    workers = children(server.proc.pid)
    server.proc.send_signal(signal.SIGTERM)
    for thread in threads:
        thread.join(WAIT_S)
    assert [status for status, _ in got] == [200, 200], got
    assert all(body["top_k"][0]["label"] == "seven" for _, body in got)
    assert server.proc.wait(timeout=WAIT_S) == 0
    assert len(set(infer_pids(server))) == 2  # one request in each worker
    events = [(r["event"], r.get("pid")) for r in server.logs()]
    assert events.index(("draining", server.proc.pid)) < events.index(("stopped", server.proc.pid))
    stopped = {pid for event, pid in events if event == "worker_stopped"}
    assert stopped == workers
    assert not any(os.path.exists(f"/proc/{pid}") for pid in workers)


def test_metrics_are_the_sum_of_every_worker(serve: Any) -> None:
    server = serve("--workers", "2", "--access-log", hooks=True)
    results = concurrently(server, 4, 1000)
    assert [status for status, _ in results] == [200] * 4
    assert len(set(infer_pids(server))) == 2  # both workers answered some
    assert server.infer(b"not an image")[0] == 400
    _, _, body = server.request("GET", "/metrics")
    text = body.decode()
    assert 'ebrt_http_requests_total{path="/v1/infer",code="200"} 4' in text
    assert 'ebrt_http_requests_total{path="/v1/infer",code="400"} 1' in text
    assert 'ebrt_request_duration_seconds_count{path="/v1/infer"} 4' in text
    assert "ebrt_inference_duration_seconds_count{" in text
    assert any(
        line.startswith("ebrt_inference_duration_seconds_count{") and line.endswith(" 4")
        for line in text.splitlines()
    )
    assert "ebrt_workers 2" in text
    assert "ebrt_inference_requests_in_flight 0" in text
    # the memory of the whole server: more than one worker's
    one = server.metric("process_resident_memory_bytes")
    assert one > 2 * 10 * 1024 * 1024


def test_ready_only_once_every_worker_is_ready(digits_float: Built, tmp_path: Path) -> None:
    with NotifyListener(tmp_path / "notify") as listener:
        env = {
            "NOTIFY_SOCKET": listener.env,
            "WATCHDOG_USEC": "200000",
            "EDGEBUNDLE_TEST_HOOKS": "1",
            "EDGEBUNDLE_TEST_SLOW_WORKER_MS": "2000",
        }
        server = Served(digits_float.path, tmp_path, "--workers", "2", env=env, wait_ready=False)
        try:
            # One worker is ready, the other still loading: not ready, and systemd hears no READY=1.
            first = server.wait_for_log("worker_ready")
            status, _, body = server.request("GET", "/readyz")
            assert status == 503, body
            assert server.infer(SEVEN.read_bytes())[0] == 503
            before: list[dict[str, str]] = []
            while (got := listener.receive(WAIT_S)) is not None and got[0].get("READY") != "1":
                assert got[1] == server.proc.pid, got  # only the supervisor speaks (NotifyAccess=main)
                before.append(got[0])
            assert got is not None, before
            assert got[1] == server.proc.pid
            assert got[0]["STATUS"] == f"ready; serving on 127.0.0.1:{server.port} with 2 workers"
            readies = [r for r in server.logs() if r["event"] == "worker_ready"]
            assert len(readies) == 2
            assert readies[0] == first
            assert before[0] == {"STATUS": f"loading the model; listening on 127.0.0.1:{server.port}"}
            assert before[1:], before  # pings while the second worker loads
            assert all(m == {"WATCHDOG": "1"} for m in before[1:]), before
            assert server.request("GET", "/readyz")[0] == 200
            assert server.infer(SEVEN.read_bytes())[0] == 200
            server.proc.send_signal(signal.SIGTERM)
            while (got := listener.receive(WAIT_S)) is not None and "STOPPING" not in got[0]:
                assert got[0] == {"WATCHDOG": "1"}, got
            assert got == ({"STOPPING": "1", "STATUS": "draining: 0 requests in flight"}, server.proc.pid)
            assert server.proc.wait(timeout=WAIT_S) == 0
        finally:
            server.stop()


def test_workers_1_is_a_single_process(serve: Any) -> None:
    server = serve("--workers", "1")
    assert children(server.proc.pid) == set()
    listening = server.wait_for_log("listening")
    assert listening["pid"] == server.proc.pid
    assert server.infer(SEVEN.read_bytes())[0] == 200
    assert server.metric("ebrt_workers") == 1
    assert not any(r["event"].startswith("worker_") for r in server.logs())
    two = serve("--workers", "2")
    assert len(children(two.proc.pid)) == 2
    assert json.dumps(two.wait_for_log("ready"))
