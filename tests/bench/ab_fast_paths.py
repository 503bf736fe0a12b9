"""Spark 4.3's Python fast paths on and off, interleaved in one application: `python -m tests.bench.ab_fast_paths`.

`sweep=spark_fast_paths` runs each option as a job of its own: a SparkSession, a warm-up and timed passes
per job, minutes each on a loaded 2-core machine, and jobs minutes apart see different load. This runs the
same variants (the real UDF styles' `apply` through `pipeline.engines.spark.measure`, timers around the
action alone) in one local[2] application, round-robin: round 0 warms every variant's workers up and is not
counted, each later round runs every variant once, so an option and its baseline see the same load. Options
switch on the live confs as a new application would set them: the pipelined reader and Unix sockets are
SparkContext confs the Python runner reads as each task starts (`tests.helpers.spark.context_conf`; each
worker environment gets a daemon of its own), the Arrow codec is a runtime SQL conf. Every pass keeps the
workers' own account of the mode they ran in (`pipeline.spark.fastpaths.worker_view`), so a switch that did
not take shows in the output. Prints a table and writes `--out` (JSON).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from pipeline.data import weights
from pipeline.data.datasets import prepare
from pipeline.engines.spark import measure
from pipeline.inference.model import ModelSpec
from pipeline.inference.preprocess import Preprocessing
from pipeline.inference.steps import Inference
from pipeline.spark.cluster import cluster
from pipeline.spark.eventlog import event_log_file
from pipeline.spark.fastpaths import python_metrics
from pipeline.spark.session import spark_conf, spark_session
from tests.helpers.config import compose_config
from tests.helpers.spark import context_conf, sql_conf

# option -> (kind of conf, key, value)
OPTIONS: dict[str, list[tuple[str, str, str]]] = {
    "baseline": [],
    "pipelined": [("context", "spark.python.udf.pipelined.enabled", "true")],
    "pipelined_depth_8": [
        ("context", "spark.python.udf.pipelined.enabled", "true"),
        ("context", "spark.python.udf.pipelined.queueDepth", "8"),
    ],
    "arrow_lz4": [("sql", "spark.sql.execution.arrow.compression.codec", "lz4")],
    "arrow_zstd": [("sql", "spark.sql.execution.arrow.compression.codec", "zstd")],
    "unix_socket": [("context", "spark.python.unix.domain.socket.enabled", "true")],
}


def _switched(stack: ExitStack, spark: Any, option: str) -> None:
    for kind, key, value in OPTIONS[option]:
        stack.enter_context((context_conf if kind == "context" else sql_conf)(spark, key, value))


def _summary(records: list[dict[str, Any]]) -> dict[str, Any]:
    waits = [record["input_waits"] for record in records]
    later = [wait for task in waits for wait in task[1:]]
    return {
        "pipelined_tasks": sum(bool(record["python_worker"].get("pipelined")) for record in records),
        "unix_domain_tasks": sum(bool(record["python_worker"].get("unix_domain")) for record in records),
        "tasks": len(records),
        "input_batches": sum(map(len, waits)),
        "later_input_wait_s_median": statistics.median(later) if later else None,
        "later_input_wait_s_total": sum(later),
        "stages": sorted({record["stage"] for record in records}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--styles", default="map_in_pandas,arrow_udf,map_in_arrow,iterator_pandas_udf,scalar_pandas_udf"
    )
    parser.add_argument("--models", default="null_model")
    parser.add_argument("--options", default="baseline,pipelined")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds after the warm-up round")
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16, help="Arrow batch rows = model batch size")
    parser.add_argument("--out", type=Path, default=Path("ab_fast_paths.json"))
    args = parser.parse_args()
    base = compose_config(
        f"dataset.num_images={args.images}",
        f"spark.max_records_per_batch={args.batch}",
        f"model.batch_size={args.batch}",
    )
    dataset = prepare(base.dataset, Path(base.cache_dir).expanduser())
    models = {
        name: Inference(
            preprocessing=Preprocessing(),
            model=ModelSpec(name="null_model")
            if name == "null_model"
            else ModelSpec(weights_file=str(weights.resolve("random", 0, Path(base.cache_dir).expanduser()))),
            batch_size=args.batch,
        )
        for name in args.models.split(",")
    }
    variants = [
        (style, model, option)
        for model in models
        for style in args.styles.split(",")
        for option in args.options.split(",")
    ]
    passes: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="ab-fast-paths-") as scratch:
        run_dir = Path(scratch)
        with (
            cluster(base, run_dir) as local,
            spark_session(spark_conf(base, run_dir, dataset.size_bytes, local, dataset.largest_file_bytes)) as spark,
        ):
            for number in range(1 + args.rounds):
                for style, model, option in variants:
                    config = compose_config(f"udf={style}", f"model={model}", "warmup=0", "repeats=1")
                    with ExitStack() as stack:
                        _switched(stack, spark, option)
                        timed = measure(spark, config, dataset, models[model], run_dir, predict_slots=2).timed[0]
                    assert timed.predicted == dataset.num_images, (style, model, option, timed.predicted)
                    row = {"round": number, "style": style, "model": model, "option": option, "s": timed.seconds}
                    passes.append(row | _summary(timed.tasks["records"]))
                    print(json.dumps({key: row[key] for key in row}), flush=True)
        log = event_log_file(run_dir / "eventlog")
        for row in passes:
            row.update(python_metrics(log, set(row.pop("stages"))))
    timed_rows = [row for row in passes if row["round"] > 0]
    table = []
    for style, model, option in variants:
        mine = [row for row in timed_rows if (row["style"], row["model"], row["option"]) == (style, model, option)]
        base_rows = [
            row for row in timed_rows if (row["style"], row["model"], row["option"]) == (style, model, "baseline")
        ]
        median = statistics.median(row["s"] for row in mine)
        reference = statistics.median(row["s"] for row in base_rows) if base_rows else None
        table.append(
            {
                "style": style,
                "model": model,
                "option": option,
                "n": len(mine),
                "median_s": median,
                "images_per_s": dataset.num_images / median,
                "speedup_vs_baseline": reference / median if reference else None,
                "pipelined_tasks": sum(row["pipelined_tasks"] for row in mine),
                "unix_domain_tasks": sum(row["unix_domain_tasks"] for row in mine),
                "tasks": sum(row["tasks"] for row in mine),
                "later_input_wait_s_median": statistics.median(
                    [row["later_input_wait_s_median"] for row in mine if row["later_input_wait_s_median"] is not None]
                    or [float("nan")]
                ),
                "bytes_to_python": statistics.median(row["bytes_to_python"] for row in mine),
            }
        )
    args.out.write_text(json.dumps({"images": dataset.num_images, "passes": passes, "table": table}, indent=1))
    for row in table:
        print(
            f"{row['model']:10} {row['style']:20} {row['option']:18} n={row['n']} {row['median_s']:6.2f} s "
            f"{row['images_per_s']:6.1f} img/s  x{row['speedup_vs_baseline'] or float('nan'):.2f}  "
            f"pipelined {row['pipelined_tasks']}/{row['tasks']} unix {row['unix_domain_tasks']}/{row['tasks']}  "
            f"later wait {1000 * row['later_input_wait_s_median']:.1f} ms  "
            f"to-python {row['bytes_to_python'] / 2**20:.1f} MiB"
        )


if __name__ == "__main__":
    main()
