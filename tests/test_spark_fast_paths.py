"""Spark 4.3's Python fast paths: each knob reaches the Spark session and, where it acts, the Python worker;
the task records carry the evidence (which worker mode ran, how long each input batch was waited for)."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest

from pipeline.engines.spark import measure
from pipeline.provenance import variant_of
from pipeline.spark.fastpaths import FAST_PATH_KEYS, fast_path_conf
from reports import fast_paths
from reports.aggregate import find_jobs, job_frame
from reports.build import build
from tests.helpers.config import compose_config
from tests.helpers.results import write
from tests.helpers.spark import context_conf, sql_conf

ROOT = Path(__file__).parent.parent


def test_every_fast_path_conf_is_set_explicitly_and_reaches_the_session(spark):
    expected = fast_path_conf(compose_config().spark)
    assert set(expected) == set(FAST_PATH_KEYS)
    assert expected == {
        "spark.python.udf.pipelined.enabled": "false",
        "spark.python.udf.pipelined.queueDepth": "2",
        "spark.sql.execution.arrow.compression.codec": "none",
        "spark.python.unix.domain.socket.enabled": "false",
        "spark.sql.execution.pythonUDF.arrow.enabled": "true",
    }
    assert {key: spark.conf.get(key) for key in expected} == expected


# A session of its own, started from a run's conf builder with every knob away from its default: the confs
# read back from spark.conf, what a Python worker was started with, and Spark's count of the bytes it sent
# to Python for 64 rows of 64 KiB of zeros under zstd.
NON_DEFAULT = (
    "import json, sys\n"
    "from pathlib import Path\n"
    "import pyarrow as pa\n"
    "from tests.helpers.config import compose_config\n"
    "from pipeline.spark.cluster import cluster\n"
    "from pipeline.spark.fastpaths import FAST_PATH_KEYS, python_metrics, worker_view\n"
    "from pipeline.spark.eventlog import event_log_file\n"
    "from pipeline.spark.session import spark_conf, spark_session\n"
    "run_dir = Path(sys.argv[1])\n"
    "config = compose_config('cluster.cores=1', *sys.argv[2:])\n"
    "def view(batches):\n"
    "    for batch in batches:\n"
    "        yield pa.RecordBatch.from_pylist([{'view': json.dumps(worker_view()), 'size': len(batch)}])\n"
    "with cluster(config, run_dir) as local, spark_session(spark_conf(config, run_dir, 2**20, local)) as spark:\n"
    "    confs = {key: spark.conf.get(key) for key in FAST_PATH_KEYS}\n"
    "    frame = spark.range(64, numPartitions=1).selectExpr('unhex(repeat(\"00\", 65536)) AS blob')\n"
    "    rows = frame.mapInArrow(view, 'view string, size long').collect()\n"
    "log = event_log_file(run_dir / 'eventlog')\n"
    "print(json.dumps({'confs': confs, 'view': json.loads(rows[0]['view']), 'rows': sum(r['size'] for r in rows),\n"
    "                  'metrics': python_metrics(log, set(range(100)))}))\n"
)


@pytest.mark.slow  # an application of its own in a subprocess: session confs cannot change in a running one
def test_non_default_knobs_reach_the_session_and_the_python_worker(tmp_path):
    overrides = [
        "spark.python_udf_pipelined=true",
        "spark.python_udf_pipelined_queue_depth=3",
        "spark.arrow_compression_codec=zstd",
        "spark.python_unix_domain_socket=true",
        "spark.python_udf_arrow=false",
    ]
    done = subprocess.run(
        [sys.executable, "-c", NON_DEFAULT, str(tmp_path), *overrides],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["confs"] == {
        "spark.python.udf.pipelined.enabled": "true",
        "spark.python.udf.pipelined.queueDepth": "3",
        "spark.sql.execution.arrow.compression.codec": "zstd",
        "spark.python.unix.domain.socket.enabled": "true",
        "spark.sql.execution.pythonUDF.arrow.enabled": "false",
    }
    view = found["view"]
    assert view["pipelined"] and view["queue_depth"] == 3  # the worker runs pipelined_process, 3 batches ahead
    assert view["unix_domain"] and view["unix_sockets"] >= 1 and view["tcp_sockets"] == 0
    assert found["rows"] == 64
    sent = found["metrics"]["bytes_to_python"]
    assert 0 < sent < 64 * 65536 / 10  # 4 MiB of zeros crossed to Python zstd-compressed


def test_a_pipelined_run_records_its_worker_mode_and_every_input_wait(spark, tmp_path, tiny_dataset, null_inference):
    config = compose_config("udf=map_in_pandas", "model=null_model", "warmup=0", "repeats=1")
    with context_conf(spark, "spark.python.udf.pipelined.enabled", "true"):
        pipelined = measure(spark, config, tiny_dataset, null_inference, tmp_path, predict_slots=2).timed[0]
    plain = measure(spark, config, tiny_dataset, null_inference, tmp_path, predict_slots=2).timed[0]
    for timed, expected in ((pipelined, True), (plain, False)):
        records = timed.tasks["records"]
        assert records and all(record["python_worker"]["pipelined"] is expected for record in records)
        # one wait per Arrow batch Spark handed the UDF
        assert all(len(record["input_waits"]) == len(record["udf_call_rows"]) >= 1 for record in records)
        assert all(wait >= 0 for record in records for wait in record["input_waits"])
    assert sum(record["rows_in"] for record in pipelined.tasks["records"]) == tiny_dataset.num_images


@pytest.mark.parametrize("style", ["map_in_arrow", "iterator_pandas_udf", "arrow_udf"])
def test_every_iterator_style_times_its_input_batches(spark, tmp_path, tiny_dataset, null_inference, style):
    config = compose_config(f"udf={style}", "model=null_model", "warmup=0", "repeats=1")
    with (
        sql_conf(spark, "spark.sql.execution.arrow.maxRecordsPerBatch", "2"),
        sql_conf(spark, "spark.sql.parquet.columnarReaderBatchSize", "2"),
    ):
        records = (
            measure(spark, config, tiny_dataset, null_inference, tmp_path, predict_slots=2).timed[0].tasks["records"]
        )
    # 12 images in Arrow batches of at most 2 rows: at least 6 batches, each waited for once
    assert sum(len(record["udf_call_rows"]) for record in records) >= 6
    assert all(len(record["input_waits"]) == len(record["udf_call_rows"]) for record in records)


@pytest.mark.parametrize("style", ["scalar_pandas_udf", "predict_batch_udf"])
def test_every_per_call_style_times_the_gap_between_its_calls(spark, tmp_path, tiny_dataset, null_inference, style):
    config = compose_config(f"udf={style}", "model=null_model", "warmup=0", "repeats=1", "model.batch_size=2")
    with (
        sql_conf(spark, "spark.sql.execution.arrow.maxRecordsPerBatch", "2"),
        sql_conf(spark, "spark.sql.parquet.columnarReaderBatchSize", "2"),
    ):
        records = (
            measure(spark, config, tiny_dataset, null_inference, tmp_path, predict_slots=2).timed[0].tasks["records"]
        )
    # 12 images in calls of at most 2 rows: at least 6 calls; every call after a task's first has its gap
    calls = sum(len(record["udf_call_rows"]) for record in records)
    gaps = [gap for record in records for gap in record["between_calls"]]
    assert calls >= 6 and len(gaps) == calls - len(records) and all(gap >= 0 for gap in gaps)


# ------------------------------------------------------------------------------------------ the report


FAST_PATHS = {  # every conf/fast_path option and the words the report names it by
    "baseline": None,
    "pipelined": "pipelined, queue depth 2",
    "pipelined_depth_8": "pipelined, queue depth 8",
    "arrow_lz4": "Arrow lz4",
    "arrow_zstd": "Arrow zstd",
    "unix_socket": "Unix-domain sockets",
    "python_udf_arrow_off": "pythonUDF.arrow off",
}


def test_every_fast_path_option_is_named():
    assert {path.stem for path in (ROOT / "conf" / "fast_path").glob("*.yaml")} == set(FAST_PATHS)


@pytest.mark.parametrize("option", FAST_PATHS)
def test_each_fast_path_option_is_a_variant_the_report_names(option):
    variant = asdict(variant_of(compose_config(f"+fast_path={option}")))
    assert fast_paths.option_label(variant) == FAST_PATHS[option]
    if option == "baseline":
        assert {knob: variant[knob] for knob in fast_paths.KNOBS} == dict.fromkeys(fast_paths.KNOBS)


def _result(
    job_dir: Path,
    images_s: float,
    knobs: dict,
    *,
    evidence: bool = True,
    pipelined: int = 0,
    unix: int = 0,
    wait_s: float = 0.02,
    bytes_in: int = 1000,
    **other,
) -> None:
    """A map_in_arrow run of 32 images with these fast-path knobs and, unless `evidence` is False, what its two
    tasks saw."""
    step = {"tasks": 2, "pipelined_tasks": pipelined, "unix_domain_tasks": unix, "later_input_wait_s_total": wait_s}
    seen = {"fast_paths": {"steps": {"fused": step}, "spark_python_metrics": {"bytes_to_python": bytes_in}}}
    variant = {"udf": "map_in_arrow", "batch_size": 16, "num_images": 32} | knobs | other
    write(job_dir, images_s, evidence=seen if evidence else None, **variant)


PIPELINED = {"python_udf_pipelined": True, "python_udf_pipelined_queue_depth": 8}
WORK = "null_model · 32 jpeg images (synthetic) · pil decoder · on here"


def test_the_report_gives_each_option_against_its_baseline_with_what_the_tasks_saw(tmp_path):
    _result(tmp_path / "0", 100.0, {}, wait_s=0.02)
    _result(tmp_path / "1", 120.0, PIPELINED, pipelined=2, wait_s=0.005)
    _result(tmp_path / "2", 80.0, {"arrow_compression_codec": "lz4"}, bytes_in=1312)
    lines = fast_paths.summary([tmp_path])
    baseline = "map_in_arrow · fused · local · bs=16"
    assert lines == [
        f"Arrow lz4 vs {baseline} ({WORK}): 0.80x the baseline (80.00 vs 100.00 img/s); 1,312 bytes to Python "
        "(+312 against the baseline)",
        f"pipelined, queue depth 8 vs {baseline} ({WORK}): 1.20x the baseline (120.00 vs 100.00 img/s); 2 of 2 "
        "tasks in pipelined workers",
    ]
    _, html = build([tmp_path], tmp_path)
    assert "Spark's Python fast paths" in html.read_text() and "20.0 → 5.0" in html.read_text()  # baseline → option


@pytest.mark.parametrize(
    "knobs, seen, said",
    [
        ({"python_unix_domain_socket": True}, {"unix": 1}, "1 of 2 tasks over Unix sockets"),
        ({"python_udf_arrow": False}, {}, "acts on plain @udf functions only; this style is not one"),
        (
            PIPELINED | {"python_unix_domain_socket": True},
            {"pipelined": 2, "unix": 2},
            "2 of 2 tasks in pipelined workers; 2 of 2 tasks over Unix sockets",
        ),
        (PIPELINED, {"evidence": False}, "no task evidence"),
    ],
    ids=["unix socket", "pythonUDF.arrow off", "combined", "no evidence"],
)
def test_what_an_option_did_is_read_from_its_tasks(tmp_path, knobs, seen, said):
    _result(tmp_path / "0", 100.0, {})
    _result(tmp_path / "1", 90.0, knobs, **seen)
    (row,) = fast_paths.compare(find_jobs([tmp_path]), job_frame(find_jobs([tmp_path])))
    assert (row.option, row.took_effect) == (fast_paths.option_label(knobs), said)


@pytest.mark.parametrize(
    "other",
    [{"udf": "arrow_udf"}, {"prefetch": 4}, {"max_bytes_per_batch": 2**20}, {"num_images": 64}, {"hostname": "else"}],
    ids=str,
)
def test_an_option_is_compared_only_with_a_baseline_of_the_same_work_and_variant(tmp_path, other):
    _result(tmp_path / "0", 100.0, {})
    _result(tmp_path / "1", 120.0, PIPELINED, pipelined=2, **other)
    assert fast_paths.summary([tmp_path]) == []
