"""`python -m reports advise --verify K`: the top K picks run on the calibrated cluster, predicted against measured.

Why: advice is only worth its agreement with runs. Each pick runs as a `python -m pipeline` job into its own run
directory (bounded: after `timeout_s` it is stopped with SIGTERM, which the job passes on to what it started, then
killed), and its result is predicted again for what it actually ran (its images, tasks and shape, as the bottleneck
check does with `shape_of`) from the same rates file. A pick missing by more than `MISS` is flagged with the rate
whose measured share of the run's slot time (its time split, `evidence.time`) strays most from the rates file's.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from pipeline.projection.bottleneck import NULL_DEVICE, Device, predict, shape_of
from pipeline.projection.calibrate import Calibration
from pipeline.results import Result, as_result, read_result
from pipeline.rundir import RunDir
from pipeline.spark.nodes import machine_cpus
from reports.advise import Choice, overrides

MISS = 0.25  # predicted/measured outside 1 +- this is flagged
STOP_GRACE_S = 60.0  # after SIGTERM, how long the job may take to stop what it started before it is killed
DECODE_STEPS = ("fused", "preprocess", "served")
MODEL_STEPS = ("fused", "predict", "served")


def run_pick(arguments: Sequence[str], run_dir: Path, timeout_s: float) -> tuple[Result | None, str]:
    """Run `python -m pipeline ARGUMENTS hydra.run.dir=RUN_DIR`, at most `timeout_s` seconds; its result (None when
    it left none) and how it ended."""
    command = [sys.executable, "-m", "pipeline", *arguments, f"hydra.run.dir={run_dir}"]
    log = run_dir.parent / f"{run_dir.name}.log"
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w", encoding="utf-8") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, process_group=0)
        how = "ran"
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            how = f"stopped after {timeout_s:.0f} s (--verify-timeout)"
            process.send_signal(signal.SIGTERM)  # the job's parent forwards it to the job, which stops its cluster
            try:
                process.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=STOP_GRACE_S)
                how += ", then killed"
    path = RunDir(run_dir).result
    if not path.is_file():
        return None, f"{how}; no result.json (log: {log})"
    return as_result(read_result(path)), f"{how} (log: {log})"


def device_of_run(calibration: Calibration, batch_size: int) -> Device:
    return NULL_DEVICE if calibration.model is None else calibration.model.device(batch_size)


def predicted(calibration: Calibration, result: Result) -> float:
    """The prediction for what the run ran (its recorded config and machine), from the calibration's rates."""
    topology, shape, workload = shape_of(
        result.config,
        result.env.get("cpu_count"),
        (result.cluster or {}).get("gpus"),
        machine_cpus(result.evidence.get("task_nodes") or {}) or None,
    )
    device = device_of_run(calibration, workload.batch_size)
    return predict(topology, calibration.rates, device, shape, workload).images_per_s


def explain(calibration: Calibration, result: Result, slower: bool) -> str:
    """The rate whose measured slot time in the run strays most from the rates file's figure in the direction of the
    miss: a run slower than predicted is explained by a rate it measured slower, never by one it measured faster
    (that one narrowed the miss)."""
    rows = result.evidence.get("time") or []
    images = result.metrics.num_images or 1
    stages = result.evidence.get("stages") or []
    tasks = sum(stage.get("num_tasks", 0) for stage in stages if stage.get("step")) or 1
    device = device_of_run(calibration, int((result.config.get("model") or {}).get("batch_size", 32)))
    model_per_image = device.host_s_per_image + (
        device.call_s(device.batch_size) / device.batch_size if device.images_per_s != float("inf") else 0.0
    )
    found = {
        "preprocess_s": (
            sum(row["prepare_s"] for row in rows if row["step"] in DECODE_STEPS) / images,
            calibration.rates.preprocess_s,
            images,
            "an image",
        ),
        "model": (
            sum(row["model_s"] for row in rows if row["step"] in MODEL_STEPS) / images,
            model_per_image,
            images,
            "an image",
        ),
        "task_s": (sum(row["other_task_s"] for row in rows) / tasks, calibration.rates.task_s, tasks, "a task"),
    }
    sign = 1.0 if slower else -1.0
    name, (measured, rate, count, unit) = max(
        found.items(), key=lambda item: sign * (item[1][0] - item[1][1]) * item[1][2]
    )
    if sign * (measured - rate) <= 0:
        side = "slower" if slower else "faster"
        return (
            f"no single rate: none measured {side} in this run than in the rates file, so the miss is in what the "
            "model leaves out (a fixed cost of short passes, or one model call a task with nothing to overlap)"
        )
    return (
        f"{name}: {measured * 1000:.2f} ms {unit} in this run vs {rate * 1000:.2f} ms in the rates file "
        f"({(measured - rate) * count:+.1f} slot-seconds over {count} {unit.split()[-1]}s)"
    )


def verify(
    calibration: Calibration, chosen: Sequence[Choice], directory: Path, images: int, timeout_s: float
) -> list[str]:
    """Run each pick (`run_pick`) and return the lines comparing predicted with measured."""
    print(f"verify: {len(chosen)} pick(s), {images} images each, into {directory} (each at most {timeout_s:.0f} s)")
    out: list[str] = []
    for number, choice in enumerate(chosen, 1):
        arguments = [*overrides(calibration, choice.candidate), f"dataset.num_images={images}", "warmup=1", "repeats=2"]
        print(f"verify #{number}: python -m pipeline {' '.join(arguments)}", flush=True)
        result, how = run_pick(arguments, Path(directory) / f"pick-{number}", timeout_s)
        if result is None or result.status != "ok" or not result.metrics.throughput_images_per_s:
            status = "no result" if result is None else result.status
            message = "" if result is None else (result.error or {}).get("message", "")
            out.append(f"#{number}: {status}: {how} {str(message).splitlines()[0][:200] if message else ''}".rstrip())
            continue
        out.append(compare(calibration, number, result))
    return out


def compare(calibration: Calibration, number: int, result: Result) -> str:
    """One pick's line: predicted (for what it ran) against measured, flagged with the straying rate past MISS."""
    measured = result.metrics.throughput_images_per_s
    expected = predicted(calibration, result)
    ratio = expected / measured
    line = f"#{number}: predicted {expected:,.1f} img/s, measured {measured:,.1f} img/s, predicted/measured {ratio:.2f}"
    if abs(ratio - 1) > MISS:
        line += f" MISSED by more than {MISS:.0%}; explained by {explain(calibration, result, slower=ratio > 1)}"
    return f"{line} [{result.run_dir}]"
