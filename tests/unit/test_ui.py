"""The builder's output levels: what each level shows, live lines on a terminal, plain lines in a log."""

from __future__ import annotations

import io
import time

import pytest

from edgebundle import ui
from edgebundle.ui import Reporter


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


@pytest.mark.parametrize(
    ("level", "shown"),
    [
        ("quiet", []),
        ("normal", ["outside a step", "a step: 3 things (0.0 s)"]),
        (
            "verbose",
            ["outside a step", "+ cc -c x.c", "inside a step", "progress 1/2", "a step: 3 things (0.0 s)"],
        ),
    ],
)
def test_each_level_shows_what_it_promises(level: ui.Level, shown: list[str]) -> None:
    out = io.StringIO()
    r = Reporter(level, out)
    r("outside a step")
    with r.step("a step") as step:
        r("+ cc -c x.c")
        r("inside a step")
        r.progress("progress 1/2")
        step.summary = "3 things"
    assert lines(out) == shown


def test_warnings_show_unless_quiet() -> None:
    out = io.StringIO()
    Reporter("normal", out).warn("self-test skipped")
    Reporter("quiet", out).warn("hidden")
    assert lines(out) == ["warning: self-test skipped"]


def test_a_log_gets_a_heartbeat_not_a_line_per_item(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    monkeypatch.setattr(ui.time, "monotonic", lambda: now[0])
    out = io.StringIO()
    r = Reporter("normal", out)
    with r.step("compiling C"):
        for i in range(1, 101):
            now[0] += 0.2  # 100 items, 20 s
            r.progress(f"{i}/100 files")
    assert lines(out) == [
        "compiling C: 25/100 files",
        "compiling C: 50/100 files",
        "compiling C: 75/100 files",
        "compiling C: 100/100 files",
        "compiling C (20.0 s)",
    ]


def test_a_terminal_gets_a_live_line_that_the_final_line_replaces(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ui, "LIVE_AFTER_S", 0.0)
    monkeypatch.setattr(ui, "REDRAW_S", 0.01)
    out = Terminal()
    r = Reporter("normal", out)
    with r.step("building the runner") as step:
        r.progress("optimising modules: 12 done")
        time.sleep(0.1)
        r.info("a line for the user")
        time.sleep(0.05)
        step.summary = "8.6 MB"
    text = out.getvalue()
    assert "\rbuilding the runner ... optimising modules: 12 done" not in text  # always cleared first
    assert "\r\x1b[Kbuilding the runner ... optimising modules: 12 done 0 s" in text
    # what stays on the screen once every live line was erased
    screen = [part.rsplit("\r\x1b[K", 1)[-1] for part in text.split("\n")]
    shown = [s for s in screen if s]
    assert shown[0] == "a line for the user"
    assert shown[1].startswith("building the runner: 8.6 MB (")
    assert len(shown) == 2


def test_a_plain_echo_gets_the_step_line() -> None:
    got: list[str] = []
    with ui.step(got.append, "model check") as step:
        step.summary = "1 input"
    assert got == ["model check: 1 input (0.0 s)"]
