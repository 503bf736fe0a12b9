"""Live progress: bars on a terminal, nothing when stderr is not one (pipes, CI logs) unless forced."""

from __future__ import annotations

import fcntl
import io
import os
import pty
import struct
import termios
import threading
import time
from types import SimpleNamespace

import pytest

from pipeline.runtime import progress
from pipeline.runtime.progress import FORCE_ENV, PassProgress, bar, enabled, sweep_eta


@pytest.fixture(autouse=True)
def not_ci(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv(FORCE_ENV, raising=False)


@pytest.fixture
def terminal():
    """A pseudo-terminal: (the stream a bar writes to, a function reading what reached the terminal)."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a new pty is 0 columns wide
    stream = os.fdopen(follower, "w")

    def read() -> str:
        stream.flush()
        chunks = []
        os.set_blocking(leader, False)
        try:
            while True:
                chunks.append(os.read(leader, 65536).decode(errors="replace"))
        except BlockingIOError:
            pass
        return "".join(chunks)

    yield stream, read
    stream.close()
    os.close(leader)


def test_quiet_when_the_stream_is_not_a_terminal():
    stream = io.StringIO()
    assert not enabled(stream)
    with bar("data", 3, stream=stream) as shown:
        shown.update(3)
    assert stream.getvalue() == ""


def test_shown_on_a_terminal(terminal):
    stream, read = terminal
    assert enabled(stream)
    with bar("data: images written", 3, stream=stream) as shown:
        shown.update(3)
    written = read()
    assert "data: images written" in written and "3/3" in written


def test_quiet_in_ci_even_on_a_terminal(terminal, monkeypatch):
    stream, read = terminal
    monkeypatch.setenv("CI", "true")
    assert not enabled(stream)


def test_forced_on_or_off(monkeypatch):
    stream = io.StringIO()
    monkeypatch.setenv(FORCE_ENV, "1")
    with bar("forced", 2, stream=stream) as shown:
        shown.update(2)
    assert "forced" in stream.getvalue() and "2/2" in stream.getvalue()
    monkeypatch.setenv(FORCE_ENV, "0")
    assert not enabled(stream)


class FakeTracker:
    """Spark's status tracker for one job of one stage whose tasks finish one per call."""

    def __init__(self, tasks: int) -> None:
        self.total, self.done = tasks, 0

    def getActiveJobsIds(self):
        return [7]

    def getJobInfo(self, job_id):
        return SimpleNamespace(stageIds=[3])

    def getStageInfo(self, stage_id):
        self.done = min(self.total, self.done + 1)
        return SimpleNamespace(numTasks=self.total, numCompletedTasks=self.done)


def test_a_pass_shows_tasks_done_images_per_second_and_stops_its_thread(terminal, monkeypatch):
    stream, read = terminal
    monkeypatch.setattr(progress, "POLL_S", 0.01)
    context = SimpleNamespace(statusTracker=lambda tracker=FakeTracker(4): tracker)
    with PassProgress(context, "pass 2 (timed)", images=64, stream=stream) as shown:
        deadline = time.monotonic() + 10
        while shown.shown.n < 64 and time.monotonic() < deadline:
            time.sleep(0.01)
    shown_text = read()
    assert "pass 2 (timed)" in shown_text and "tasks 4/4" in shown_text and "img/s so far" in shown_text
    assert "64/64" in shown_text and "all tasks done" in shown_text  # not the last poll's count
    assert not any(thread.name == "pass-progress" for thread in threading.enumerate())
    cost = shown.cost()
    assert cost["shown"] and cost["polls"] >= 4 and 0 < cost["cpu_s"] < 10  # its own thread's CPU time


def test_a_hidden_pass_starts_no_thread():
    stream = io.StringIO()
    with PassProgress(SimpleNamespace(statusTracker=lambda: FakeTracker(1)), "pass 1", 4, stream=stream) as shown:
        assert shown.thread is None
    assert stream.getvalue() == ""
    assert shown.cost() == {"shown": False, "polls": 0, "cpu_s": 0.0}


def test_the_sweep_eta_comes_after_the_first_job():
    assert sweep_eta(0, 4, 0.0) == ""
    assert sweep_eta(1, 4, 30.0) == ", about 90 s left"
    assert sweep_eta(4, 4, 100.0) == ""
