"""The bottleneck model's rates, read from measurements on disk, with defaults measured on this machine.

Why: `pipeline.projection.bottleneck` predicts from numbers; those numbers must be measurements, each saying where
it came from. Two kinds of file give them:

- result.json files (read through `pipeline.results`): an ok `engine=torch model=null_model` run (one process,
  `engine.loader_workers=0`) decodes and preprocesses every image on one core and runs no model, so its median
  timed pass over its images is the core-seconds per image (wall time: on a busy machine it overstates);
- result.json files of ok Spark `model=null_model` runs, and of `model=accelerator` runs whose simulated devices
  were busy at least half of the last pass (`DEVICE_BOUND`), with a fused stage in their time split
  (`evidence.time`) and task records: the seconds each task spent outside the UDF's Python code, less moving the
  images through Arrow (which the model prices apart), are Spark's cost per task: reading its Parquet split,
  shipping and starting the task on a Python worker, the worker's handshake (`task_s`). A device-bound simulated
  run's tasks mostly sleep inside the UDF, so the time outside it is Spark's, under the load the run saw, not a
  wait for a core (a CPU-bound one with more tasks than cores measured 6.3 s a task here): a sweep of them (the
  check sweep, `sweep=scaling`) measures its own, each checked run left out of the rates it is checked with;
- result.json files of ok Spark `topology=model_server model=accelerator` runs (the server's evidence and the
  served tasks' records of the last timed pass): the server's CPU seconds (its process tree's) per image less
  the device's host cost (`serve_cpu_s_per_image`), and a request's round trip (the tasks' model phase over the
  server's requests) less what the model prices apart: the simulated device's law and host cost for the mean
  request, its wait in Triton's queue and for the device (contention, which the model's device bound covers),
  and the server's CPU for its images (`request_s`: the client's side and gRPC both ways);
- the microbenchmark JSON (`pytest tests/bench --benchmark-json=FILE`): `tiny_no_sleep` (a job, one wave of
  tasks, a Python call per task) gives the fixed cost per job, `image_round_trip@N` at several Arrow batch
  sizes the cost per batch (the slope over batches per slot), and `image_round_trip` minus `tiny_no_sleep` the
  cost of moving the raw images through Arrow both ways, per byte.

A figure neither gives comes from `DEFAULTS`, measured here with `python -m pipeline.projection.rates DATASET_DIR` (CPU
time of one process, so a busy machine does not inflate it) or from the runs named in its source.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

from pipeline.projection.bottleneck import RAW_BYTES, Rates
from pipeline.results import Result, read_results

# figure -> (value, where it came from). Measured 2026-12-03 on this machine (2-core AMD EPYC, no GPU) with nothing
# else running, see docs/projections.md "Rates". The same command on 2026-12-02, with other sessions' jobs on the
# machine (load average 6-10), gave CPU times about 2.2 times these: shared cores slow even a process's CPU time.
MEASURED = "measured here 2026-12-03, idle machine"
HERE = (
    "python -m pipeline.projection.rates DATASET_DIR --images 256 "
    "(CPU time of one process, 1 torch thread, generated JPEGs)"
)
ASSUMED = "assumed, not measured"
ARROW_S_PER_IMAGE = 1.41e-3  # a raw 192 KiB image through Arrow both ways, core-seconds (the microbenchmark)
DEFAULTS: dict[str, tuple[float, str]] = {
    "preprocess_s/jpeg/pil": (2.23e-3, f"{MEASURED}: {HERE}"),
    "preprocess_s/jpeg/torchvision": (1.78e-3, f"{MEASURED}: {HERE}"),
    "preprocess_s/raw": (0.02e-3, f"{MEASURED}: {HERE}, resize 256 (a no-op at 256x256) and crop"),
    "preprocess_s/raw/original": (
        0.38e-3,
        f"{MEASURED}: {HERE}: our reconstruction of the original's preprocessing (int16 list column, float transforms)",
    ),
    "job_s": (
        0.19,
        "the microbenchmark (docs/measurements.md) tiny_no_sleep, local[2] (a job, 2 tasks, 2 Python calls), "
        "2026-12-03, idle machine (0.28 in 2026-11 on a loaded one)",
    ),
    "task_s": (
        0.25,
        "measured here 2026-12-03 on an idle machine: median of 3 model=null_model fused runs on one local_cluster "
        "worker of 4 cores, 2 emulated GPUs, 128 JPEGs in 4 tasks (0.21, 0.25, 0.27 s): a task's time outside "
        "the UDF's Python code less the Arrow transfer; Python workers reused",
    ),
    "batch_s": (0.0012, "facts.md: ~1-1.3 ms per Arrow batch into a pandas UDF, this machine, 2026-12-01"),
    "transfer_s_per_byte": (
        ARROW_S_PER_IMAGE / (2 * RAW_BYTES),
        "the microbenchmark (docs/measurements.md): 1.41 core-ms per raw 192 KiB image through Arrow both ways, "
        "2026-12-03, idle machine (3.9 in 2026-11 on a loaded one)",
    ),
    "shuffle_s_per_byte": (
        2 * ARROW_S_PER_IMAGE / (2 * RAW_BYTES),
        f"{ASSUMED}: a write and a read, each like Arrow's",
    ),
    "write_s_per_byte": (ARROW_S_PER_IMAGE / (2 * RAW_BYTES), f"{ASSUMED}: Parquet encoding of binary like Arrow's"),
    "read_s_per_byte": (ARROW_S_PER_IMAGE / (2 * RAW_BYTES), f"{ASSUMED}: Parquet decoding of binary like Arrow's"),
    "model_build_s": (0.431, f"{MEASURED}: {HERE}: resnet50() and load_state_dict, CPU"),
    "scan_s_per_image": (
        0.0,
        "none beyond task_s: a binary column's Parquet scan is part of the per-task cost measured with it "
        "(the original's int16 list column: original_costs)",
    ),
    "crop_transfer_s_per_byte": (0.0, "as transfer_s_per_byte: our crops are a binary column like our input"),
    "request_s": (
        5.0e-3,
        "measured here 2026-12-03 on an idle machine: median of 4 topology=model_server model=accelerator runs "
        "(256 JPEGs, requests of 16 and 32 crops; 3.0-7.0 ms with as many tasks as cores, 45 ms with 4 tasks on 2 "
        "cores): a request's round trip less the device, the queue and the server's CPU",
    ),
    "serve_cpu_s_per_image": (
        0.73e-3,
        "measured here 2026-12-03 on an idle machine: median of the same 4 runs (0.52-0.83 ms): the PyTriton "
        "server's process tree's CPU seconds per image less the device's host cost",
    ),
    "repartition_task_s": (
        0.0,
        "not measured: only a calibrate run with spark.partitions set (calibrate=repartition) times a repartition's "
        "map stage; the model then prices its scan and shuffle write alone",
    ),
    "job_cpu_s": (
        0.0,
        "not measured: only a calibration's runs record the CPU of every process of a pass "
        "(pipeline.runtime.process_cpu); the model then counts the tasks' own CPU alone",
    ),
}
ROUND_TRIP = "image_round_trip"

# The original study's own costs (its int16 list column read from Parquet and moved through Arrow, its float
# preprocessing in chained scalar pandas UDFs), measured with real Spark by `python -m tests.bench.original_costs`
# (module docstring there): the `derived` figures of its JSON, core-seconds an image, named by these keys.
INT16_BYTES = 2 * RAW_BYTES  # the original's uint8 arrays read back as int16 (array<smallint>)
SCAN_LIST = "scan int16 list, row reader (Spark 3.3)"
ARROW_LIST = "arrow int16 list one way, row reader"
ORIGINAL_UDFS = "original UDFs, pandas side"
MODEL_BUILD = "model build"
SCAN_CROPS = "scan float32 crop list, row reader"
ARROW_CROPS = "arrow float32 crop list one way, row reader"
FLOAT_CROP_BYTES = 4 * 224 * 224 * 3  # the original's normalized float32 crops
ORIGINAL_BENCH = (
    "python -m tests.bench.original_costs --images 256 --per-file 128 --repeats 3 (pyspark 4.3 local[1], CPU "
    "seconds of the JVM and its Python workers, the least of 3 runs)"
)
# what `python -m tests.bench.original_costs` measured (its `derived` figures), as `original_costs` reads them
ORIGINAL_MEASURED: dict[str, float] = {
    SCAN_LIST: 8.44e-3,
    ARROW_LIST: 3.71e-3,
    ORIGINAL_UDFS: 3.87e-3,
    SCAN_CROPS: 6.64e-3,
    ARROW_CROPS: 5.82e-3,
    MODEL_BUILD: 0.233,
}
ORIGINAL_WHEN = (
    "measured here 2026-12-07 05:15 UTC with another session's tests running, load average 1.2 before, 5.4 after on "
    "2 CPUs (the bench's yardstick ran 1.48x its idle figure: CPU times inflated by the load; least of 3 runs)"
)


def original_costs(path: Path | None = None) -> dict[str, tuple[float, str]]:
    """The rates that are the original's own (module comment above): from the JSON `python -m
    tests.bench.original_costs --out FILE` wrote when `path` is given (its date and load in each source), else
    the figures it measured here when this was written (`ORIGINAL_MEASURED`). Per image or per byte, core-seconds
    here: its int16 list column's scan with the row-based reader Spark 3.3.1 used by default
    (`scan_s_per_image`) and through Arrow into pandas one way (`transfer_s_per_byte`, per int16 byte), its
    chained UDFs' pandas side less the model (`preprocess_s`), the per-call rebuild (`model_build_s`), and its
    float32 crops' list column read from Parquet (`read_s_per_byte`: two_stage's predict job) and through Arrow
    (`crop_transfer_s_per_byte`: split's and two_stage's; out of Python priced as into it, not measured apart)."""
    if path is None:
        figures, when = ORIGINAL_MEASURED, f"{ORIGINAL_WHEN}: {ORIGINAL_BENCH}"
    else:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
        figures = document["derived"]
        load = document.get("load_before", ["?"])[0], document.get("load_after", ["?"])[0]
        when = (
            f"measured {document.get('started', '?')} by tests.bench.original_costs ({path}), load average "
            f"{load[0]:.1f} before, {load[1]:.1f} after, on {document.get('cpus', '?')} CPUs"
        )
    arrow, crops = figures[ARROW_LIST], figures[ARROW_CROPS]
    return {
        "scan_s_per_image": (figures[SCAN_LIST], f"{when}: the int16 list column's Parquet scan, row-based reader"),
        "transfer_s_per_byte": (
            arrow / INT16_BYTES,
            f"{when}: {arrow * 1000:.2f} ms an image of array<smallint> through Arrow into pandas one way",
        ),
        "preprocess_s": (
            figures[ORIGINAL_UDFS],
            f"{when}: the original's chained scalar UDFs in Spark (np.stack, float64, Resize, CenterCrop, "
            "Normalize; predict's input, 1,000 logits out; no model) less the column through Arrow",
        ),
        "model_build_s": (figures[MODEL_BUILD], f"{when}: resnet50() and load_state_dict, CPU, 1 torch thread"),
        "read_s_per_byte": (
            figures[SCAN_CROPS] / FLOAT_CROP_BYTES,
            f"{when}: {figures[SCAN_CROPS] * 1000:.2f} ms a float32 crop's list column scanned, row-based reader",
        ),
        "crop_transfer_s_per_byte": (
            crops / FLOAT_CROP_BYTES,
            f"{when}: {crops * 1000:.2f} ms a float32 crop's array<float> through Arrow into pandas one way (out of "
            "Python priced the same, not measured apart)",
        ),
    }


def _defaults(image_format: str, decoder: str) -> tuple[dict[str, float], dict[str, str]]:
    key = f"preprocess_s/{image_format}" if image_format != "jpeg" else f"preprocess_s/jpeg/{decoder}"
    values, sources = {}, {}
    for name, (value, source) in DEFAULTS.items():
        if name.startswith("preprocess_s/"):
            if name != key:
                continue
            name = "preprocess_s"
        values[name], sources[name] = value, f"default: {source}"
    return values, sources


def preprocess_runs(
    results: Iterable[tuple[Path, Result]], image_format: str, decoder: str
) -> list[tuple[Path, float]]:
    """Every ok one-process `engine=torch model=null_model` run of that format and decoder among `results`
    (`pipeline.results.read_results`), with its seconds per image (median timed pass / images)."""
    runs = []
    for path, result in results:
        variant, metrics = result.variant, result.metrics
        if result.status != "ok" or variant is None or not metrics.wall_s or not metrics.num_images:
            continue
        if (variant.engine, variant.model, variant.image_format) != ("torch", "null_model", image_format):
            continue
        if (variant.loader_workers or 0) != 0 or (image_format == "jpeg" and (variant.decoder or "pil") != decoder):
            continue
        runs.append((path, statistics.median(metrics.wall_s) / metrics.num_images))
    return runs


DEVICE_BOUND = 0.5  # a simulated run's devices busy at least this share of its last pass: its tasks mostly slept


def _measures_task_cost(result: Result) -> bool:
    """A Spark run with no model computing on the CPU beside its tasks' own work, whose tasks did not wait for cores:
    the null model's, or a simulated device's that bound the run."""
    variant = result.variant
    if result.status != "ok" or variant is None or variant.engine != "spark":
        return False
    if variant.model == "null_model":
        return True
    busy = (result.evidence.get("simulated_device") or {}).get("busy_fraction")
    return variant.model == "accelerator" and busy is not None and busy >= DEVICE_BOUND


def task_runs(results: Iterable[tuple[Path, Result]]) -> list[tuple[Path, float]]:
    """Every Spark run of `results` that measures Spark's cost per task (`_measures_task_cost`) with a fused stage
    in its time split, with its seconds per task spent outside the UDF's Python code (the stage's task run time less
    the span of each task's UDF record) and not moving the images through Arrow (priced apart by the model, at the
    default per-byte rate)."""
    per_byte = DEFAULTS["transfer_s_per_byte"][0]
    runs = []
    for path, result in results:
        if not _measures_task_cost(result):
            continue
        records = (result.tasks or {}).get("records") or []
        for stage in result.evidence.get("time") or []:
            inside = [record["end"] - record["start"] for record in records if record.get("stage") == stage["stage_id"]]
            if stage.get("step") != "fused" or not inside:
                continue
            moved = per_byte * sum(stage["spark"].get(key, 0.0) for key in ("bytes_to_python", "bytes_from_python"))
            runs.append((path, max(0.0, stage["task_run_s"] - sum(inside) - moved) / len(inside)))
    return runs


def serve_runs(results: Iterable[tuple[Path, Result]]) -> list[tuple[Path, float, float]]:
    """Every ok Spark `topology=model_server model=accelerator` run of `results` with its `request_s` and
    `serve_cpu_s_per_image` (module docstring), from its last timed pass."""
    runs = []
    for path, result in results:
        variant = result.variant
        if result.status != "ok" or variant is None:
            continue
        if (variant.engine, variant.model, variant.topology) != ("spark", "accelerator", "model_server"):
            continue
        served = (result.evidence.get("server") or {}).get("last_pass") or {}
        records = [r for r in (result.tasks or {}).get("records") or [] if r.get("step") == "served"]
        device = (result.config or {}).get("device") or {}
        waited = sum(record.get("finish_s", 0.0) for record in records)
        if not served.get("requests") or "cpu_s" not in served or not waited:
            continue
        requests, host = served["requests"], float(device.get("host_s_per_image") or 0.0)
        per_request = served["images"] / requests
        law = float(device.get("latency_s") or 0.0) + per_request / float(device["images_per_s"]) + per_request * host
        queued = (served["queue_ms"] / 1e3 + served.get("device_wait_s", 0.0)) / requests
        serve_cpu = max(0.0, served["cpu_s"] / served["images"] - host)
        runs.append((path, max(0.0, waited / requests - law - queued - serve_cpu * per_request), serve_cpu))
    return runs


def microbenchmark_rates(path: Path) -> dict[str, tuple[float, str]]:
    """job_s, batch_s and transfer_s_per_byte from a microbenchmark JSON (module docstring); a figure its cases
    cannot give (a case missing, a batch slope that noise made negative) is left out."""
    document = json.loads(Path(path).read_text(encoding="utf-8"))
    cases = {}
    for bench in document.get("benchmarks", []):
        info = bench.get("extra_info") or {}
        if "case" in info:
            cases[info["case"]] = (bench["stats"]["median"], info)
    found: dict[str, tuple[float, str]] = {}
    sized = [
        (info["calls"] / info["slots"], median)
        for name, (median, info) in cases.items()
        if name.startswith(f"{ROUND_TRIP}@") and info.get("calls")
    ]
    if len({x for x, _ in sized}) >= 2:
        mean_x = statistics.fmean(x for x, _ in sized)
        mean_y = statistics.fmean(y for _, y in sized)
        slope = sum((x - mean_x) * (y - mean_y) for x, y in sized) / sum((x - mean_x) ** 2 for x, _ in sized)
        if slope > 0:
            found["batch_s"] = (slope, f"{path}: slope of {ROUND_TRIP}@N medians over Arrow batches per slot")
    if "tiny_no_sleep" in cases:
        median, info = cases["tiny_no_sleep"]
        batch_s = found.get("batch_s", DEFAULTS["batch_s"])[0]
        found["job_s"] = (
            max(0.0, median - batch_s * info["calls"] / info["slots"]),
            f"{path}: tiny_no_sleep median less its Arrow batches",
        )
        if ROUND_TRIP in cases:
            round_trip, trip = cases[ROUND_TRIP]
            per_byte = (round_trip - median) * trip["slots"] / trip["images"] / (2 * RAW_BYTES)
            if per_byte > 0:
                found["transfer_s_per_byte"] = (per_byte, f"{path}: ({ROUND_TRIP} - tiny_no_sleep) per byte")
    return found


def measured_rates(
    directories: Iterable[Path],
    microbenchmark: Path | None = None,
    image_format: str = "jpeg",
    decoder: str = "pil",
    leave_out: Iterable[Path] = (),
) -> Rates:
    """The rates for `image_format` (and JPEG `decoder`): from result.json files under `directories` and the
    microbenchmark file where they have the figure, `DEFAULTS` elsewhere; `Rates.sources` says which. The runs in
    the `leave_out` job dirs are not read: a run checked against the model must not be one it was fitted on."""
    left_out = {Path(job_dir).resolve() for job_dir in leave_out}
    results = [(path, result) for path, result in read_results(directories) if path.parent not in left_out]
    values, sources = _defaults(image_format, decoder)
    runs = preprocess_runs(results, image_format, decoder)
    if runs:
        values["preprocess_s"] = statistics.median(seconds for _, seconds in runs)
        sources["preprocess_s"] = f"median of {len(runs)} engine=torch model=null_model run(s): " + ", ".join(
            str(path) for path, _ in runs
        )
    tasks = task_runs(results)
    if tasks:
        values["task_s"] = statistics.median(seconds for _, seconds in tasks)
        sources["task_s"] = f"median of {len(tasks)} Spark null-model or device-bound run(s)' time split: " + ", ".join(
            str(path) for path, _ in tasks
        )
    served = serve_runs(results)
    if served:
        runs_named = ", ".join(str(path) for path, _, _ in served)
        values["request_s"] = statistics.median(request for _, request, _ in served)
        values["serve_cpu_s_per_image"] = statistics.median(cpu for _, _, cpu in served)
        for name in ("request_s", "serve_cpu_s_per_image"):
            sources[name] = f"median of {len(served)} topology=model_server model=accelerator run(s): {runs_named}"
    if microbenchmark is not None:
        for name, (value, source) in microbenchmark_rates(microbenchmark).items():
            values[name], sources[name] = value, source
    return replace(Rates(**values), sources=sources)


def measure_here(dataset_dir: Path, images: int = 64) -> dict[str, float]:
    """CPU seconds per image of one process on this machine: decode + resize + crop with Pillow and with
    torchvision, the raw arrays' resize + crop, and one ResNet50 build (`model_build_s`), torch on one thread.
    The source of `DEFAULTS`; CPU time (`time.process_time`), so other jobs on the machine do not count."""
    import pyarrow.parquet as pq
    import torch
    from torchvision.models import resnet50

    from pipeline.inference.preprocess import Preprocessing

    torch.set_num_threads(1)
    table = pq.read_table(sorted(Path(dataset_dir).glob("*.parquet")), columns=["image"])
    jpegs = table.column("image").to_pylist()[:images]
    raw = [bytes(RAW_BYTES)] * len(jpegs)

    def per_image(preprocessing: Preprocessing, data: list[bytes]) -> float:
        preprocessing.crop(data[0])
        started = time.process_time()
        for image in data:
            preprocessing.crop(image)
        return (time.process_time() - started) / len(data)

    figures = {
        "preprocess_s/raw/original": original_preprocess_s(len(jpegs)),
        "preprocess_s/jpeg/pil": per_image(Preprocessing(decoder="pil"), jpegs),
        "preprocess_s/jpeg/torchvision": per_image(Preprocessing(decoder="torchvision"), jpegs),
        "preprocess_s/raw": per_image(Preprocessing(image_format="raw"), raw),
    }
    state = resnet50(weights=None).state_dict()
    started = time.process_time()
    resnet50(weights=None).load_state_dict(state)
    figures["model_build_s"] = time.process_time() - started
    return figures


def original_preprocess_s(images: int) -> float:
    """CPU seconds per image of our reconstruction of the original's preprocessing: a row of its flattened
    int16 array column out of Arrow into numpy, reshaped to HWC, to a float tensor, then Resize(256),
    CenterCrop(224) and Normalize in float (its notebooks' transforms; the exact code is not in anchors.md)."""
    import numpy as np
    import pyarrow as pa
    import torch
    from torchvision import transforms

    column = pa.array([np.zeros(RAW_BYTES, dtype=np.int16)] * images, type=pa.list_(pa.int16()))
    transform = transforms.Compose(
        [
            transforms.Resize(256),
            transforms.CenterCrop(224),
            transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
        ]
    )

    def run() -> None:
        for row in column.to_pandas():
            transform(torch.from_numpy(np.array(row).reshape(256, 256, 3)).permute(2, 0, 1).float())

    run()
    started = time.process_time()
    run()
    return (time.process_time() - started) / images


def main(argv: list[str] | None = None) -> int:
    """`python -m pipeline.projection.rates DATASET_DIR`: this machine's CPU costs (`measure_here`);
    `python -m pipeline.projection.rates DIR [DIR ...] --write FILE`: the rates file of the results under the DIRs
    (`pipeline.projection.calibrate`, what sweep=calibrate's end writes)."""
    parser = argparse.ArgumentParser(prog="python -m pipeline.projection.rates", description=measure_here.__doc__)
    parser.add_argument("dataset_dir", type=Path, nargs="+", help="a generated JPEG data set, or results with --write")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--write", type=Path, help="write the rates file of the results under the DIRs to FILE")
    arguments = parser.parse_args(argv)
    if arguments.write is not None:
        from pipeline.projection.calibrate import write

        missing = [str(path) for path in arguments.dataset_dir if not path.is_dir()]
        if missing:
            parser.error(f"{missing[0]} is not a directory")
        try:
            print(write(arguments.dataset_dir, arguments.write))
        except ValueError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        return 0
    if len(arguments.dataset_dir) != 1:
        parser.error("one DATASET_DIR without --write")
    for name, value in measure_here(arguments.dataset_dir[0], arguments.images).items():
        print(f"{name}: {value * 1000:.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
