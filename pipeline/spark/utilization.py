"""How busy a stage kept its task slots, from the event log: the measure that shows a skewed split.

A stage's slot utilization is its tasks' busy time over slots x stage wall time (submitted -> completed);
the idle fraction is the share of the stage's wall time during which at least one slot ran no task. A
16-image data set in one 32-row row group read on 2 slots gives one task all 16 rows and the other none:
one slot idle almost the whole stage, utilization just over one half, throughput halved, and nothing else
in a result says so. A stage with a slot idle most of its wall time is flagged in `evidence.checks`
(`idle_slot_stages`); it does not fail the run: the numbers are right, the split is what is wrong.

Busy intervals are the event log's [launch, run_end] (`eventlog._busy`: executor time, not the driver's
finish timestamp, which lags by the result handling); slots are the ones the stage could use (the GPU
slots for a model stage under GPU scheduling, else the application's task slots).
"""

from __future__ import annotations

from typing import Any

# A slot idle over this share of a stage's wall time is idle "most of the stage".
IDLE_FRACTION_FLAG = 0.5


def slot_usage(busy: list[tuple[float, float]], start: float, end: float, slots: int) -> dict[str, float | None]:
    """Utilization and idle fraction of `slots` slots over [start, end], given the tasks' busy intervals.

    Intervals are clipped to the window; a concurrency above `slots` (which the plan should not allow) counts
    as all slots busy. None for both when the window is empty or there are no slots.
    """
    wall = end - start
    if wall <= 0 or slots <= 0:
        return {"slot_utilization": None, "idle_slot_fraction": None, "busy_s": None}
    points: list[tuple[float, int]] = []
    busy_s = 0.0
    for launch, finish in busy:
        low, high = max(start, launch), min(end, finish)
        if high > low:
            busy_s += high - low
            points += [(low, 1), (high, -1)]
    points.sort(key=lambda point: (point[0], point[1]))  # an end at t frees its slot before a start at t
    short = 0.0  # time with fewer than `slots` tasks running
    running, at = 0, start
    for time, step in points:
        if running < slots:
            short += time - at
        running, at = running + step, time
    if running < slots:
        short += end - at
    return {
        "slot_utilization": min(1.0, busy_s / (slots * wall)),
        "idle_slot_fraction": short / wall,
        "busy_s": busy_s,
    }


def idle_slot_stages(rows: list[dict[str, Any]]) -> list[str]:
    """One line per stage that left a task slot idle most of its wall time, saying by how much and why."""
    flagged = []
    for row in rows:
        idle = row.get("idle_slot_fraction")
        if idle is None or idle <= IDLE_FRACTION_FLAG:
            continue
        where = f"stage {row['stage_id']}" + (f" of {row['app_id']}" if row.get("app_id") else "")
        flagged.append(
            f"{where} ({row.get('step') or 'no pipeline step'}): a task slot idle {idle:.0%} of the stage, "
            f"slot utilization {row['slot_utilization']:.0%}; {row['tasks']} tasks on {row['slots']} slots, "
            f"rows per task {row.get('rows_per_task')}"
        )
    return flagged
