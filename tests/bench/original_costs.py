"""The original study's own CPU costs, measured here part by part: `python -m tests.bench.original_costs`.

    python -m tests.bench.original_costs --images 256 --repeats 3

Why: `python -m reports --original-table` projects the original's published configurations with the bottleneck
model, whose rates for the original's data path were assumed (its int16 arrays priced like our binary column
through Arrow, its Parquet read not priced at all). This reproduces that data path with real Spark (local[1]:
one task slot, so CPU seconds are core-seconds) and prices each part apart, in CPU seconds of the driver JVM's
process tree (the JVM and its Python workers; `psutil`, not wall time, so other jobs on the machine count less),
the JVM's own share beside it (what Spark's Arrow writer thread may overlap with the Python worker):

- the data in the original's layout (anchors.md section 1): 256x256x3 uint8 arrays flattened into a list column
  `image`, which Parquet stores as INT32 annotated UINT_8 and Spark reads back as array<smallint> (int16), ~1,000
  images a file in one row group (here `--per-file`); beside it the same bytes as one binary column (ours);
- `floor`: a job of one row reading nothing, whose CPU (the JVM's own for a job) every case below is less;
- `scan/*`: the Parquet scan alone (`size(image)` / `length(image)` into the noop sink), the list column with
  Spark 4's nested vectorized reader and with the row-based reader Spark 3.3.1 (the original's Databricks 12.0)
  used by default (`spark.sql.parquet.enableNestedColumnVectorizedReader=false`), and the binary column;
- `*/float_list_row_reader`: the same for float32 crops in a list<float> column (its two_stage's intermediate
  files, read by its predict job; and what its split moves through Arrow), row-based reader;
- `arrow/*`: the scan plus a scalar pandas UDF returning each row's length: the column through Arrow into
  pandas (array<smallint> as a numpy array a row; binary as bytes), less the scan: the one-way transfer;
- `original/*`: the original's fused scalar UDFs chained as its notebooks did (`preprocess`: np.stack of the int16
  rows, reshape, `astype(float64)`, `torch.Tensor` of the NCHW transpose, Resize(256), CenterCrop(224), Normalize,
  a flattened float32 array a row; `predict` with a null model: np.stack, reshape, `torch.Tensor`, 1,000 float
  zeros a row for its logits), less the Arrow case: the pandas-side cost of its UDFs;
- `python/preprocess`: the original's `preprocess` alone in this process on a batch of `--per-file` rows
  (`time.process_time`, torch on 1 thread: the threads Spark's Python workers get, OMP_NUM_THREADS=task.cpus,
  which the case `worker threads` reads from a worker); `python/predict_input` its predict's input handling;
- `oversubscribed`: the same preprocessing in 2 processes at once on 2 torch threads each (4 threads on 2
  cores, what a Python worker without Spark's OMP_NUM_THREADS would do) vs 1 thread each: CPU s an image;
- `model_build`: the scalar predict's per-call rebuild without the GPU (`resnet50()`, `load_state_dict`);
- `yardstick`: `pipeline.projection.rates.original_preprocess_s`, 0.38 ms on the idle machine (2026-12-03): the
  ratio says how much this run's load inflated CPU time (printed, never used to correct a figure).

CPU seconds are the least of the runs: other jobs on a shared machine only add to a run's CPU time. Prints one
line a figure (core-milliseconds an image unless said), the load average before and after, and
writes `--out` (JSON) for `pipeline.projection.rates` to cite. Timings are CPU seconds of a shared machine:
run it when the load is low, and read the load it prints beside every figure.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psutil
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.projection.rates import (
    ARROW_CROPS,
    ARROW_LIST,
    MODEL_BUILD,
    ORIGINAL_UDFS,
    SCAN_CROPS,
    SCAN_LIST,
    original_preprocess_s,
)

SIDE = 256
IMAGE_VALUES = SIDE * SIDE * 3  # the original's flattened 256x256x3 arrays
CROP_VALUES = 3 * 224 * 224
LOGITS = 1000
NESTED_READER = "spark.sql.parquet.enableNestedColumnVectorizedReader"
# `pipeline.projection.rates.original_preprocess_s` on the idle machine (2026-12-03, DEFAULTS): how much a run's
# load inflates CPU time, printed beside the figures (not used to correct them)
YARDSTICK_IDLE_S = 0.38e-3


def write_layout(directory: Path, images: int, per_file: int, seed: int = 0) -> tuple[Path, Path, Path]:
    """(list dir, binary dir, crops dir): `images` random 256x256x3 uint8 arrays as the original stored them (a
    flattened list<uint8> column `image`, one row group a file of `per_file`), as one binary column of the same
    bytes, and as many float32 crops in a list<float> column `crop` (what its two_stage wrote and read back)."""
    rng = np.random.default_rng(seed)
    listed, binary, crops = directory / "list", directory / "binary", directory / "crops"
    for folder in (listed, binary, crops):
        folder.mkdir(parents=True, exist_ok=True)
    for number, start in enumerate(range(0, images, per_file)):
        count = min(per_file, images - start)
        pixels = rng.integers(0, 256, size=(count, IMAGE_VALUES), dtype=np.uint8)
        offsets = pa.array(np.arange(count + 1, dtype=np.int32) * IMAGE_VALUES)
        column = pa.ListArray.from_arrays(offsets, pa.array(pixels.reshape(-1)))
        pq.write_table(pa.table({"image": column}), listed / f"part-{number:05d}.parquet", row_group_size=count)
        rows = pa.array([row.tobytes() for row in pixels], type=pa.binary())
        pq.write_table(pa.table({"image": rows}), binary / f"part-{number:05d}.parquet", row_group_size=count)
        values = rng.standard_normal(count * CROP_VALUES, dtype=np.float32)
        offsets = pa.array(np.arange(count + 1, dtype=np.int32) * CROP_VALUES)
        column = pa.ListArray.from_arrays(offsets, pa.array(values))
        pq.write_table(pa.table({"crop": column}), crops / f"part-{number:05d}.parquet", row_group_size=count)
    return listed, binary, crops


def original_preprocess(image: pd.Series) -> pd.Series:
    """The original notebooks' scalar `preprocess` UDF body (np.float is np.float64; torch.Tensor makes float32)."""
    import torch
    from torchvision import transforms

    preprocess = transforms.Compose(
        [
            transforms.Resize(256),
            transforms.CenterCrop(224),
            transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
        ]
    )
    batch_dim = len(image)
    numpy_batch = np.stack(image.values)
    reshaped_images = numpy_batch.reshape(batch_dim, SIDE, SIDE, 3).astype(np.float64)
    torch_tensor = torch.Tensor(reshaped_images.transpose(0, 3, 1, 2))
    preprocessed_images = preprocess(torch_tensor).numpy()
    return pd.Series([crop.flatten() for crop in preprocessed_images])


def original_predict_input(preprocessed_images: pd.Series) -> pd.Series:
    """The original's scalar `predict` UDF body without its model (what the CPU does around the GPU): np.stack,
    reshape, `torch.Tensor`, and a row of 1,000 float32 logits out per image."""
    import torch

    batch_dim = len(preprocessed_images)
    numpy_batch = np.stack(preprocessed_images.values)
    torch.Tensor(numpy_batch.reshape(batch_dim, 3, 224, 224))
    return pd.Series(list(np.zeros((batch_dim, LOGITS), dtype=np.float32)))


def tree_cpu_s(pid: int) -> tuple[float, float]:
    """(CPU seconds of process `pid` and every descendant, live ones' own and ended ones' through their parent;
    of `pid` alone): the JVM with its Python workers, and the JVM's own share."""
    total = own = 0.0
    root = psutil.Process(pid)
    for process in [root, *root.children(recursive=True)]:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system + times.children_user + times.children_system
        if process.pid == pid:
            own = times.user + times.system
    return total, own


def spark_cases(listed: Path, binary: Path, crops: Path, images: int, repeats: int) -> dict[str, dict[str, Any]]:
    """Every Spark case (module docstring) in one local[1] application: a warm-up run, then `repeats` runs each,
    round-robin so that each case sees the same load; CPU seconds an image, the least of the runs (other jobs on a
    shared machine only add to a run's CPU time: shared cores and caches), their median beside it, and wall."""
    from pyspark.sql import functions as F
    from pyspark.sql.functions import pandas_udf
    from pyspark.sql.types import ArrayType, FloatType, IntegerType, StringType

    from pipeline.spark.driver_jvm import stop_driver_jvm
    from pipeline.spark.session import spark_session

    @pandas_udf(IntegerType())
    def lengths(image: pd.Series) -> pd.Series:
        return image.map(len).astype("int32")

    preprocess = pandas_udf(original_preprocess, ArrayType(FloatType()))
    predict = pandas_udf(original_predict_input, ArrayType(FloatType()))

    @pandas_udf(StringType())
    def threads(image: pd.Series) -> pd.Series:
        import torch

        seen = f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')} torch={torch.get_num_threads()}"
        return pd.Series([seen] * len(image))

    conf = {
        "spark.master": "local[1]",
        "spark.app.name": "original-costs",
        "spark.driver.memory": "3g",
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.execution.arrow.maxRecordsPerBatch": "1000",
        "spark.python.worker.reuse": "true",
        "spark.sql.adaptive.enabled": "false",
    }
    figures: dict[str, dict[str, Any]] = {}
    with spark_session(conf) as spark:
        jvm = spark.sparkContext._gateway.proc.pid
        data_list = spark.read.parquet(str(listed))
        data_binary = spark.read.parquet(str(binary))
        data_crops = spark.read.parquet(str(crops))
        schema = data_list.schema.simpleString()
        cases: dict[str, tuple[Callable[[], Any], str]] = {
            "floor": (lambda: spark.range(1).select(F.col("id")), "true"),
            "scan/list_vectorized": (lambda: data_list.select(F.size("image")), "true"),
            "scan/list_row_reader": (lambda: data_list.select(F.size("image")), "false"),
            "scan/binary": (lambda: data_binary.select(F.length("image")), "true"),
            "arrow/list": (lambda: data_list.select(lengths("image")), "true"),
            "arrow/list_row_reader": (lambda: data_list.select(lengths("image")), "false"),
            "arrow/binary": (lambda: data_binary.select(lengths("image")), "true"),
            "scan/float_list_row_reader": (lambda: data_crops.select(F.size("crop")), "false"),
            "arrow/float_list_row_reader": (lambda: data_crops.select(lengths("crop")), "false"),
            "original/fused": (lambda: data_list.select(predict(preprocess("image"))), "true"),
        }
        samples: dict[str, list[tuple[float, float, float]]] = {name: [] for name in cases}
        for round_number in range(repeats + 1):
            for name, (frame, nested) in cases.items():
                spark.conf.set(NESTED_READER, nested)
                (cpu, jvm_cpu), wall = tree_cpu_s(jvm), time.perf_counter()
                frame().write.mode("overwrite").format("noop").save()
                (cpu_after, jvm_after), wall = tree_cpu_s(jvm), time.perf_counter() - wall
                if round_number:
                    samples[name].append(((cpu_after - cpu) / images, wall / images, (jvm_after - jvm_cpu) / images))
        seen = data_list.limit(1).select(threads("image")).collect()[0][0]
    stop_driver_jvm()
    for name, runs in samples.items():
        figures[name] = {
            "cpu_s_per_image": min(cpu for cpu, _, _ in runs),
            "median_cpu_s_per_image": statistics.median(cpu for cpu, _, _ in runs),
            "jvm_cpu_s_per_image": min(jvm for _, _, jvm in runs),
            "wall_s_per_image": statistics.median(wall for _, wall, _ in runs),
            "runs": runs,
        }
    figures["schema"] = {"spark": schema}
    figures["worker threads"] = {"seen": seen}
    return figures


def python_case(function: Callable[[pd.Series], Any], rows: pd.Series, repeats: int) -> float:
    """CPU seconds an image of `function` on `rows` in this process, after a warm-up call; the least of the runs."""
    function(rows)
    runs = []
    for _ in range(repeats):
        started = time.process_time()
        function(rows)
        runs.append((time.process_time() - started) / len(rows))
    return min(runs)


def _int16_rows(count: int) -> pd.Series:
    """`count` rows as the original's UDF got them: a numpy int16 array a row."""
    rng = np.random.default_rng(1)
    return pd.Series(list(rng.integers(0, 256, size=(count, IMAGE_VALUES)).astype(np.int16)))


def _preprocess_worker(threads: int, count: int, repeats: int, queue: Any) -> None:
    import torch

    torch.set_num_threads(threads)
    rows = _int16_rows(count)
    original_preprocess(rows)
    started_cpu, started = time.process_time(), time.perf_counter()
    for _ in range(repeats):
        original_preprocess(rows)
    queue.put(((time.process_time() - started_cpu) / (count * repeats), (time.perf_counter() - started) / count))


def oversubscription(count: int, repeats: int, processes: int = 2) -> dict[str, dict[str, float]]:
    """The original's preprocessing in `processes` processes at once, on 1 torch thread each and on as many
    threads each as this machine has cores: CPU s an image (each process's own) and wall s an image of one."""
    found = {}
    context = multiprocessing.get_context("spawn")
    for threads in (1, os.cpu_count() or 1):
        queue = context.Queue()
        workers = [
            context.Process(target=_preprocess_worker, args=(threads, count, repeats, queue)) for _ in range(processes)
        ]
        for worker in workers:
            worker.start()
        results = [queue.get(timeout=600) for _ in workers]
        for worker in workers:
            worker.join(timeout=60)
        found[f"{processes} processes x {threads} threads"] = {
            "cpu_s_per_image": statistics.fmean(cpu for cpu, _ in results),
            "wall_s_per_image_per_process": statistics.fmean(wall for _, wall in results) / repeats,
        }
    return found


def model_build_s(repeats: int) -> float:
    """CPU seconds of the original's per-call model rebuild without a GPU: `resnet50()` and `load_state_dict`."""
    import torch
    from torchvision.models import resnet50

    torch.set_num_threads(1)
    state = resnet50(weights=None).state_dict()
    runs = []
    for _ in range(repeats):
        started = time.process_time()
        resnet50().load_state_dict(state)
        runs.append(time.process_time() - started)
    return statistics.median(runs)


def measure(images: int, per_file: int, repeats: int) -> dict[str, Any]:
    """Every figure of the module docstring, with the machine and its load around them."""
    import torch
    import torchvision

    before = os.getloadavg()
    started = datetime.now(UTC).isoformat(timespec="seconds")
    with tempfile.TemporaryDirectory(prefix="original-costs-") as scratch:
        listed, binary, crops = write_layout(Path(scratch), images, per_file)
        figures = spark_cases(listed, binary, crops, images, repeats)
    torch.set_num_threads(1)
    rows = _int16_rows(per_file)
    figures["python/preprocess"] = {"cpu_s_per_image": python_case(original_preprocess, rows, repeats)}
    crops = original_preprocess(rows)
    figures["python/predict_input"] = {"cpu_s_per_image": python_case(original_predict_input, crops, repeats)}
    figures["oversubscribed"] = oversubscription(per_file, max(1, repeats - 1))
    figures["model_build"] = {"cpu_s": model_build_s(repeats)}
    figures["yardstick"] = {"cpu_s_per_image": original_preprocess_s(64), "idle": YARDSTICK_IDLE_S}
    return {
        "started": started,
        "load_before": before,
        "load_after": os.getloadavg(),
        "cpus": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "versions": {"torch": torch.__version__, "torchvision": torchvision.__version__, **_spark_versions()},
        "images": images,
        "per_file": per_file,
        "repeats": repeats,
        "figures": figures,
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def _spark_versions() -> dict[str, str]:
    import pyspark

    return {"pyspark": pyspark.__version__, "pyarrow": pa.__version__, "numpy": np.__version__}


def derived(document: dict[str, Any]) -> dict[str, float]:
    """The per-image figures the projection uses, core-seconds: each part less the case it is built on."""
    figures = document["figures"]

    def cpu(name: str) -> float:
        """A case's CPU s an image less a job's own (`floor`: one row, no data read), spread over the images."""
        floor = 0.0 if name.startswith("python/") else figures["floor"]["cpu_s_per_image"]
        return figures[name]["cpu_s_per_image"] - floor

    return {
        "scan int16 list, vectorized": cpu("scan/list_vectorized"),
        SCAN_LIST: cpu("scan/list_row_reader"),
        "scan binary": cpu("scan/binary"),
        "arrow int16 list one way": cpu("arrow/list") - cpu("scan/list_vectorized"),
        ARROW_LIST: cpu("arrow/list_row_reader") - cpu("scan/list_row_reader"),
        "arrow binary one way": cpu("arrow/binary") - cpu("scan/binary"),
        ORIGINAL_UDFS: cpu("original/fused") - cpu("arrow/list"),
        SCAN_CROPS: cpu("scan/float_list_row_reader"),
        ARROW_CROPS: cpu("arrow/float_list_row_reader") - cpu("scan/float_list_row_reader"),
        "original fused, all (vectorized)": cpu("original/fused"),
        "python preprocess alone": cpu("python/preprocess"),
        "python predict input alone": cpu("python/predict_input"),
        MODEL_BUILD: figures["model_build"]["cpu_s"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.original_costs", description=__doc__)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--per-file", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON to this file")
    arguments = parser.parse_args(argv)
    document = measure(arguments.images, arguments.per_file, arguments.repeats)
    document["derived"] = derived(document)
    print(f"started {document['started']} on {document['cpus']} CPUs ({document['cpu_model']})")
    print(f"load average before {document['load_before']}, after {document['load_after']}")
    print(f"versions {document['versions']}; Spark schema {document['figures']['schema']['spark']}")
    print(f"worker threads: {document['figures']['worker threads']['seen']}")
    for name, value in document["derived"].items():
        print(f"{name}: {value * 1000:.2f} core-ms" + ("" if name == MODEL_BUILD else " an image"))
    for name, item in document["figures"].items():
        if "wall_s_per_image" in item:
            cpu, wall = item["cpu_s_per_image"] * 1000, item["wall_s_per_image"] * 1000
            jvm = item["jvm_cpu_s_per_image"] * 1000
            print(f"  {name}: cpu {cpu:.2f} ms (the JVM's own {jvm:.2f}), wall {wall:.2f} ms an image")
    for name, item in document["figures"]["oversubscribed"].items():
        print(
            f"oversubscribed {name}: cpu {item['cpu_s_per_image'] * 1000:.2f} ms an image, "
            f"wall {item['wall_s_per_image_per_process'] * 1000:.2f} ms an image a process"
        )
    print(f"model build (resnet50() + load_state_dict, CPU): {document['figures']['model_build']['cpu_s']:.3f} s")
    yardstick = document["figures"]["yardstick"]["cpu_s_per_image"]
    print(
        f"yardstick (rates.original_preprocess_s): {yardstick * 1000:.2f} ms an image, "
        f"{yardstick / YARDSTICK_IDLE_S:.2f}x the idle machine's {YARDSTICK_IDLE_S * 1000:.2f} ms (2026-12-03)"
    )
    if arguments.out is not None:
        arguments.out.write_text(json.dumps(document, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
