"""The model server section: what each topology=model_server run's server did (from Triton's statistics, kept
in `evidence.server`), and the ratio of the server to the best in-process run of the same work and variant.

In-process means every other topology of engine=spark (fused, split, stage_level, two_stage): the model in
the tasks' own Python workers. The runs compared differ in their topology only, and in what it decides
(`COMPARED`): everything else, the UDF style, batch sizes, cluster shape and machine included, is the same
(`reports.aggregate.comparable`).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from reports.aggregate import Job, comparable, fastest_ok, work_text

IN_PROCESS = ("fused", "split", "stage_level", "two_stage")
# the topology and what it decides: the GPUs a task takes (as the topology needs), the predict stage's partitions
COMPARED = ("topology", "gpu_amounts", "predict_partitions")


def _ms(value: Any) -> str:
    return "–" if value is None else f"{value:.1f}"


def server_rows(jobs: list[Job], frame: pd.DataFrame) -> list[dict[str, Any]]:
    """One row per run that had a model server: its instances and devices, start time, the batches the
    dynamic batcher formed in the last timed pass, queue vs compute time, the server's CPU per image (the cores it
    takes from the decoding tasks beside it), and the decoupling check."""
    rows = []
    for job, row in zip(jobs, frame.to_dict("records")):
        result = job.decoded
        server = (result.evidence or {}).get("server") if result else None
        if not server:
            continue
        last = server.get("last_pass") or {}
        checks = result.evidence.get("checks") or {}
        sizes = ", ".join(f"{size} x{count}" for size, count in (last.get("batch_sizes") or {}).items())
        rows.append(
            {
                "label": row["run_label"],
                "throughput": row["throughput_images_per_s"],
                "instances": ", ".join(
                    f"{i['device']}" + (f" ({i['gpu']})" if i.get("gpu") else "") for i in server["instances"]
                ),
                "start_s": f"{server['start_s']:.1f}",
                "requests": last.get("requests"),
                "images": last.get("images"),
                "batch_sizes": sizes or "–",
                "mean_batch": _ms(last.get("mean_batch_size")),
                "queue_ms_per_request": _ms(last.get("queue_ms_per_request")),
                "compute_ms_per_batch": _ms(last.get("compute_ms_per_batch")),
                "cpu_ms_per_image": "–" if last.get("cpu_ms_per_image") is None else f"{last['cpu_ms_per_image']:.2f}",
                "decoding_tasks": f"{checks.get('served_stage_max_concurrent')} of {checks.get('slots')} slots",
                "died": (server.get("died") or {}).get("reason"),
            }
        )
    return rows


def ratios(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Per work and variant but the topology (module docstring): the best model_server run against the best
    in-process Spark run."""
    ok = frame[(frame["status"] == "ok") & (frame["engine"] == "spark")]
    found = []
    for shared, group in comparable(ok, COMPARED):
        best_server = fastest_ok(group[group["topology"] == "model_server"])
        best_inside = fastest_ok(group[group["topology"].isin(IN_PROCESS)])
        if best_server is None or best_inside is None:
            continue
        found.append(
            {
                "work": work_text(shared),
                "server": best_server["run_label"],
                "server_throughput": best_server["throughput_images_per_s"],
                "in_process": best_inside["run_label"],
                "in_process_throughput": best_inside["throughput_images_per_s"],
                "ratio": best_server["throughput_images_per_s"] / best_inside["throughput_images_per_s"],
            }
        )
    return found
