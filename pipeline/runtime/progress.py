"""Live progress on the terminal: data generation, weight calibration, the reference run and each pass.

A 16,232-image `original_10g` pass takes about an hour on 2 cores; without this nothing is printed between
the warm-up and the end. Bars (tqdm) go to stderr, only when it is a terminal and `CI` is not set; a
forced `SPARK_INFERENCE_BENCH_PROGRESS=1` shows them anyway, `=0` hides them. Logs, results and the
summary never depend on them.

A pass's bar is fed by `PassProgress`, a driver thread that polls Spark's status tracker
(`sc.statusTracker()`: the active jobs' stages, tasks done of their total) every `POLL_S` seconds and stops
before the pass's result is observed. It runs in the driver beside the timed action, never inside a task;
its cost is 1 + jobs + stages py4j calls per poll (two or three for a fused pass), twice a second, on the
driver's CPU while the pass runs; the thread measures its own CPU time (`cost()`, kept in each pass's task
summary as `progress_thread`), and it is not started at all when progress is hidden, as in CI and in every
test run.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from typing import IO, Any, TypeVar

from tqdm import tqdm

FORCE_ENV = "SPARK_INFERENCE_BENCH_PROGRESS"
POLL_S = 0.5
T = TypeVar("T")


def enabled(stream: IO[str] | None = None) -> bool:
    """Whether bars are drawn on `stream` (stderr): forced on or off by SPARK_INFERENCE_BENCH_PROGRESS,
    else only on a terminal and outside CI."""
    forced = os.environ.get(FORCE_ENV)
    if forced in ("0", "1"):
        return forced == "1"
    stream = sys.stderr if stream is None else stream
    if os.environ.get("CI"):
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed or not a file
        return False


def bar(description: str, total: int | None, unit: str = "image", stream: IO[str] | None = None) -> tqdm:
    """A progress bar, or a disabled one (which draws nothing and costs a method call per update)."""
    stream = sys.stderr if stream is None else stream
    return tqdm(
        total=total,
        desc=description,
        unit=unit,
        file=stream,
        disable=not enabled(stream),
        dynamic_ncols=True,
        leave=True,
    )


def iterate(items: Iterable[T], description: str, total: int | None, unit: str = "image") -> Iterator[T]:
    """`items`, with a bar counting each as it is handed out (so a consumer that takes exactly `total` items,
    never exhausting the iterator, still sees the bar reach its total)."""
    with bar(description, total, unit) as shown:
        for item in items:
            shown.update(1)
            yield item


class PassProgress:
    """One pass's bar, fed from Spark's status tracker by a driver thread (see the module docstring):
    tasks done out of the tasks of the stages its jobs submitted so far, images done estimated from that
    share, images/s so far and tqdm's ETA."""

    def __init__(self, context: Any, description: str, images: int, stream: IO[str] | None = None) -> None:
        self.context, self.images = context, images
        self.shown = bar(description, images, "image", stream)
        self.stop_event = threading.Event()
        self.thread: threading.Thread | None = None
        self.started = time.monotonic()
        self.polls = 0
        self.cpu_s = 0.0  # the polling thread's own CPU time, set when it stops

    def __enter__(self) -> PassProgress:
        if not self.shown.disable:
            self.thread = threading.Thread(target=self._poll, name="pass-progress", daemon=True)
            self.thread.start()
        return self

    def __exit__(self, kind: object = None, *exc: object) -> None:
        self.stop_event.set()
        if self.thread is not None:
            self.thread.join()
        if kind is None:  # the pass ended: every image is accounted for (run._record checks it)
            elapsed = time.monotonic() - self.started
            self.shown.n = self.images
            self.shown.set_postfix_str(
                f"all tasks done, {self.images / elapsed if elapsed else 0:.1f} img/s", refresh=False
            )
            self.shown.refresh()
        self.shown.close()

    def tasks(self) -> tuple[int, int]:
        """(tasks done, tasks) over the stages of the jobs active now."""
        tracker = self.context.statusTracker()
        done = total = 0
        for job_id in tracker.getActiveJobsIds():
            job = tracker.getJobInfo(job_id)
            for stage_id in job.stageIds if job else []:
                stage = tracker.getStageInfo(stage_id)
                if stage is not None:
                    done, total = done + stage.numCompletedTasks, total + stage.numTasks
        return done, total

    def cost(self) -> dict[str, Any]:
        """What the bar cost the driver in this pass: whether it ran, its polls and its thread's CPU seconds."""
        return {"shown": self.thread is not None, "polls": self.polls, "cpu_s": self.cpu_s}

    def _poll(self) -> None:
        try:
            self._poll_until_stopped()
        finally:
            self.cpu_s = time.thread_time()

    def _poll_until_stopped(self) -> None:
        seen_done = seen_total = 0
        while not self.stop_event.wait(POLL_S):
            self.polls += 1
            try:
                done, total = self.tasks()
            except Exception:  # the application stopping under the poll: the pass's own error is the one to see
                return
            if total:
                seen_done, seen_total = done, total
            if seen_total:
                estimate = round(self.images * seen_done / seen_total)
                elapsed = time.monotonic() - self.started
                self.shown.n = estimate
                self.shown.set_postfix_str(
                    f"tasks {seen_done}/{seen_total}, {estimate / elapsed if elapsed else 0:.1f} img/s so far",
                    refresh=False,
                )
                self.shown.refresh()


def sweep_eta(done: int, total: int, elapsed_s: float) -> str:
    """`about N s left` from the mean time of the jobs done so far; empty before the first job ended."""
    if done <= 0 or total <= done:
        return ""
    return f", about {elapsed_s / done * (total - done):.0f} s left"
