"""Nothing lost, every failure explained (issue 17): re-runs into a used run dir, damaged caches, repeated ids,
Spark-side errors, killed processes, read-only run dirs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from multiprocessing import get_context
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from omegaconf import OmegaConf

from pipeline import callbacks
from pipeline.callbacks import SweepProgress
from pipeline.data.datasets import (
    IMAGE_SCHEMA,
    META_FILE,
    Dataset,
    DatasetError,
    _remove_stale_staging,
    describe,
    prepare,
)
from pipeline.data.synthetic import synth_jpeg
from pipeline.engines.spark import measure
from pipeline.inference.model import ModelSpec
from pipeline.inference.preprocess import Preprocessing
from pipeline.inference.steps import Inference
from pipeline.job import keep_earlier_result
from pipeline.rundir import PREVIOUS_RESULT_FILE, RESULT_FILE
from pipeline.runtime.errors import describe_error
from pipeline.spark.cluster import cluster
from pipeline.spark.eventlog import event_log_file
from pipeline.spark.session import fresh_event_log_dir, spark_conf, sql_confs
from tests.helpers.cli import cli
from tests.helpers.config import compose_config
from tests.helpers.data import write_images
from tests.helpers.processes import cmdline, survivors, tree, wait_until_gone


# --- a run dir used before -------------------------------------------------------------------------------------
def test_a_new_application_starts_with_an_empty_event_log_dir_and_the_old_logs_kept_aside(tmp_path):
    old = tmp_path / "eventlog" / "local-1700000000000"
    old.parent.mkdir()
    old.write_text('{"Event":"SparkListenerLogStart"}\n')
    config = compose_config()
    with cluster(config, tmp_path) as local:
        conf = spark_conf(config, tmp_path, 2**20, local)
    assert conf["spark.eventLog.dir"] == (tmp_path / "eventlog").resolve().as_uri()
    assert list((tmp_path / "eventlog").iterdir()) == []
    assert [p.name for p in (tmp_path / "eventlog.previous").iterdir()] == [old.name]
    (tmp_path / "eventlog" / "local-1800000000000").write_text("{}\n")  # the new application's: the only one
    assert event_log_file(tmp_path / "eventlog").name == "local-1800000000000"


def test_an_empty_or_missing_event_log_dir_is_just_created(tmp_path):
    assert fresh_event_log_dir(tmp_path / "run").is_dir()
    assert fresh_event_log_dir(tmp_path / "run").is_dir()
    assert not (tmp_path / "run" / "eventlog.previous").exists()


def write(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))


def test_an_earlier_ok_result_is_kept_as_result_previous_json(tmp_path):
    write(tmp_path / RESULT_FILE, {"status": "ok", "marker": 1})
    assert keep_earlier_result(tmp_path) == tmp_path / PREVIOUS_RESULT_FILE
    assert not (tmp_path / RESULT_FILE).exists()
    assert json.loads((tmp_path / PREVIOUS_RESULT_FILE).read_text())["marker"] == 1


@pytest.mark.parametrize("earlier", ['{"status": "failed"}', '{"status": "interrupted"}', "not json", None])
def test_an_earlier_result_that_is_not_ok_is_simply_replaced(tmp_path, earlier):
    write(tmp_path / PREVIOUS_RESULT_FILE, {"status": "ok", "marker": "older ok"})
    if earlier is not None:
        (tmp_path / RESULT_FILE).write_text(earlier)
    assert keep_earlier_result(tmp_path) is None
    assert json.loads((tmp_path / PREVIOUS_RESULT_FILE).read_text())["marker"] == "older ok"


@pytest.mark.slow
def test_a_re_run_into_the_same_run_dir_is_ok_and_a_failed_one_keeps_the_earlier_ok_result(tmp_path, cache_dir):
    run_dir = tmp_path / "run"
    command = ["model=null_model", "dataset.num_images=8", "warmup=0", "repeats=1", f"hydra.run.dir={run_dir}"]
    for attempt in range(2):
        done = cli(tmp_path, *command, f"cache_dir={cache_dir}")
        result = json.loads((run_dir / RESULT_FILE).read_text())
        assert done.returncode == 0 and result["status"] == "ok", (attempt, result["error"], done.stderr[-2000:])
    first_app = json.loads((run_dir / PREVIOUS_RESULT_FILE).read_text())["cluster"]["app_id"]
    assert result["cluster"]["app_id"] != first_app
    assert [p.name for p in (run_dir / "eventlog").iterdir()] == [result["cluster"]["app_id"]]
    assert [p.name for p in (run_dir / "eventlog.previous").iterdir()] == [first_app]
    done = cli(tmp_path, *command, "model.batch_size=0", f"cache_dir={cache_dir}")
    assert done.returncode == 1
    assert json.loads((run_dir / RESULT_FILE).read_text())["status"] == "failed"
    assert json.loads((run_dir / PREVIOUS_RESULT_FILE).read_text())["cluster"]["app_id"] == result["cluster"]["app_id"]
    # as a Ctrl-C leaves it: an interrupted result and the interrupted application's event log; resume runs it again
    interrupted = {**result, "status": "interrupted", "error": {"type": "KeyboardInterrupt", "message": "interrupted"}}
    write(run_dir / RESULT_FILE, interrupted)
    (run_dir / "eventlog" / "local-1700000000000.inprogress").write_text("{}\n")
    done = cli(tmp_path, *command, "resume=true", f"cache_dir={cache_dir}")
    resumed = json.loads((run_dir / RESULT_FILE).read_text())
    assert done.returncode == 0 and resumed["status"] == "ok", (resumed["error"], done.stderr[-2000:])
    assert [p.name for p in (run_dir / "eventlog").iterdir()] == [resumed["cluster"]["app_id"]]


# --- a damaged cache -------------------------------------------------------------------------------------------
def generated(num_images: int, *overrides: str):
    return compose_config(f"dataset.num_images={num_images}", "dataset.images_per_file=2", *overrides).dataset


@pytest.mark.parametrize(
    ("damage", "why"),
    [
        (lambda path: (path / "part-00001.parquet").unlink(), "part-00001.parquet missing"),
        (lambda path: (path / "part-00001.parquet").write_bytes(b"short"), "part-00001.parquet has 5 bytes"),
        (
            lambda path: (path / "part-00009.parquet").write_bytes((path / "part-00000.parquet").read_bytes()),
            "part-00009.parquet not in _dataset.json",
        ),
        (lambda path: (path / "_dataset.json").write_text("{"), "_dataset.json unreadable"),
        (lambda path: (path / "_dataset.json").unlink(), "no _dataset.json"),
    ],
)
def test_a_damaged_cached_data_set_is_generated_again_saying_why(tmp_path, caplog, damage, why):
    first = prepare(generated(6), tmp_path)
    damage(first.path)
    with caplog.at_level("WARNING", logger="pipeline.data.datasets"):
        again = prepare(generated(6), tmp_path)
    assert again.generated is True and again.path == first.path
    assert (again.num_images, again.num_files) == (6, 3)
    assert why in caplog.text and "generating it again" in caplog.text
    assert prepare(generated(6), tmp_path).generated is False  # and now it proves itself


def test_a_cached_data_set_records_every_file_with_its_rows_and_bytes(tmp_path):
    dataset = prepare(generated(3), tmp_path)
    meta = json.loads((dataset.path / META_FILE).read_text())
    assert meta["spec"] == dataset.spec
    assert meta["files"] == [
        {"name": file.name, "rows": rows, "bytes": file.stat().st_size}
        for file, rows in zip(sorted(dataset.path.glob("*.parquet")), [2, 1])
    ]


def given_parquet(path: Path, rows: int) -> Path:
    return write_images(path, [(f"id-{i}", i, b"x") for i in range(rows)]).path


@pytest.mark.parametrize("num_images", [3, 5])
def test_given_parquet_with_another_row_count_than_dataset_num_images_says_so(tmp_path, num_images):
    path = given_parquet(tmp_path / "given", 4)
    config = compose_config("dataset=parquet", f"dataset.path={path}", f"dataset.num_images={num_images}").dataset
    with pytest.raises(DatasetError, match=rf"dataset.num_images={num_images}, but .* holds 4 rows in 1 files"):
        prepare(config, tmp_path / "cache")
    exact = compose_config("dataset=parquet", f"dataset.path={path}", "dataset.num_images=4").dataset
    assert prepare(exact, tmp_path / "cache").num_images == 4


# --- repeated ids ----------------------------------------------------------------------------------------------
def jpeg_rows(ids: list[str]) -> list[tuple[str, int, bytes]]:
    return [(image_id, index, synth_jpeg(3, index)) for index, image_id in enumerate(ids)]


REPEATING = ["a", "b", "a", "c", "d", "c", "e", "f"]  # row 2 repeats row 0, row 5 row 3: at batch starts for 1 and 2


def test_repeated_ids_are_refused_before_any_engine_work_naming_the_ids_and_rows(tmp_path):
    path = tmp_path / "given"
    with pytest.raises(
        DatasetError, match=r"2 ids repeat.*'a' \(part-0.parquet rows 0, 2\), 'c' \(part-0.parquet rows 3, 5\)"
    ):
        write_images(path, jpeg_rows(REPEATING))
    config = compose_config("dataset=parquet", f"dataset.path={path}").dataset
    with pytest.raises(DatasetError, match="ids repeat"):
        prepare(config, tmp_path / "cache")


def test_an_id_repeated_across_files_names_both_files(tmp_path):
    tmp_path.mkdir(exist_ok=True)
    for number, ids in enumerate([["x", "y"], ["z", "x"]]):
        table = pa.table([ids, [0, 0], [b"i", b"j"]], schema=IMAGE_SCHEMA)
        pq.write_table(table, tmp_path / f"part-{number}.parquet")
    with pytest.raises(DatasetError, match=r"1 ids repeat.*'x' \(part-0.parquet row 0; part-1.parquet row 1\)"):
        describe(tmp_path, {}, False, 0.0)


PER_BATCH = [(style, rows) for style in ("scalar_pandas_udf", "predict_batch_udf") for rows in (1, 2, 3)]
WHOLE = [
    (style, 2) for style in ("map_in_pandas", "map_in_arrow", "iterator_pandas_udf", "rdd_map_partitions", "arrow_udf")
]


@pytest.mark.parametrize(("style", "rows"), PER_BATCH + WHOLE)
def test_each_batch_is_its_own_record_even_when_batches_start_with_the_same_id(spark, tmp_path, style, rows):
    """The engine never sees repeated ids (they are refused above); the ledger must not depend on it."""
    data = tmp_path / "data"
    data.mkdir()
    ids, labels, images = zip(*jpeg_rows(REPEATING))
    pq.write_table(pa.table([list(ids), list(labels), list(images)], schema=IMAGE_SCHEMA), data / "part-0.parquet")
    dataset = Dataset(data, 8, 1, (data / "part-0.parquet").stat().st_size, {}, False, 0.0)  # describe bypassed
    inference = Inference(preprocessing=Preprocessing(), model=ModelSpec(name="null_model"), batch_size=rows)
    config = compose_config(f"udf={style}", "model=null_model", "warmup=0", "repeats=1")
    keys = ("spark.sql.execution.arrow.maxRecordsPerBatch", "spark.sql.parquet.columnarReaderBatchSize")
    with sql_confs(spark, dict.fromkeys(keys, str(rows))):
        timed = measure(spark, config, dataset, inference, tmp_path, predict_slots=2).timed[0]
    assert (timed.read, timed.predicted, len(timed.bad)) == (8, 8, 0)


# --- Spark-side failures and odd files, explained --------------------------------------------------------------
class Py4JJavaError(Exception):
    """Stands in for py4j's: its text is the Java exception's, after the py4j call."""


KILLED_WORKER = (
    "An error occurred while calling o106.save.\n"
    ": org.apache.spark.SparkException: Job aborted due to stage failure: Task 0 in stage 6.0 failed 1 times, most "
    "recent failure: Lost task 0.0 in stage 6.0 (TID 7) (localhost executor driver): org.apache.spark.SparkException: "
    "Python worker exited unexpectedly (crashed). Consider setting 'spark.python.worker.faulthandler.enabled' "
    "configuration to 'true' for the better Python traceback.\n"
    "\tat org.apache.spark.api.python.BasePythonRunner$ReaderIterator$$anonfun$1.applyOrElse(PythonRunner.scala:1136)\n"
    "Caused by: java.io.EOFException\n"
    "\tat java.base/java.io.DataInputStream.readFully(DataInputStream.java:210)\n"
)
TYPES_DISAGREE = (
    "An error occurred while calling o78.save.\n"
    ": org.apache.spark.SparkException: [FAILED_READ_FILE.PARQUET_COLUMN_DATA_TYPE_MISMATCH] Encountered error while "
    "reading file file:///data/part-1.parquet. Data type mismatches when reading Parquet column [label]. Expected "
    "Spark type int, actual Parquet type BINARY. SQLSTATE: KD001\n"
    "\tat org.apache.spark.sql.errors.QueryExecutionErrors$.parquetColumnDataTypeMismatchError(QueryExecutionErrors)\n"
    "Caused by: org.apache.spark.sql.execution.datasources.SchemaColumnConvertNotSupportedException: column: [label], "
    "physicalType: BINARY, logicalType: int\n"
)
PYTHON_IN_TASK = (
    "An error occurred while calling o81.save.\n"
    ": org.apache.spark.SparkException: Job aborted due to stage failure: Task 1 in stage 3.0 failed 1 times, most "
    "recent failure: Lost task 1.0 in stage 3.0 (TID 5) (127.0.0.1 executor driver): "
    "org.apache.spark.api.python.PythonException: Traceback (most recent call last):\n"
    '  File "steps.py", line 70, in prepare\n'
    "pipeline.inference.steps.BadImageError: bad image id=7: cannot decode (on_bad_image=fail)\n"
)


@pytest.mark.parametrize(
    ("text", "kind", "message"),
    [
        (
            KILLED_WORKER,
            "SparkException",
            "task 0.0 in stage 6.0 (TID 7, localhost executor driver) failed: SparkException: "
            "Python worker exited unexpectedly (crashed).",
        ),
        (
            TYPES_DISAGREE,
            "SparkException",
            "[FAILED_READ_FILE.PARQUET_COLUMN_DATA_TYPE_MISMATCH] Encountered error while reading file "
            "file:///data/part-1.parquet. Data type mismatches when reading Parquet column [label]. Expected Spark "
            "type int, actual Parquet type BINARY. (caused by SchemaColumnConvertNotSupportedException: column: "
            "[label], physicalType: BINARY, logicalType: int)",
        ),
        (
            PYTHON_IN_TASK,
            "BadImageError",
            "bad image id=7: cannot decode (on_bad_image=fail) "
            "(task 1.0 in stage 3.0 (TID 5, 127.0.0.1 executor driver))",
        ),
    ],
)
def test_a_spark_side_failure_is_one_line_naming_its_cause_not_the_py4j_call(text, kind, message):
    error = describe_error(Py4JJavaError(text))
    assert (error["type"], error["message"]) == (kind, message)
    assert "An error occurred while calling" in error["detail"]


def test_a_non_parquet_file_read_by_spark_is_named_in_the_error(spark, tmp_path):
    write_images(tmp_path / "data", [("x", 0, b"i")])
    (tmp_path / "data" / "README.txt").write_text("a note")
    with pytest.raises(Exception) as failure:
        spark.read.parquet(str(tmp_path / "data")).write.format("noop").mode("overwrite").save()
    error = describe_error(failure.value)
    assert "An error occurred while calling" not in error["message"]
    assert "README.txt" in error["message"] and "footer" in error["message"], error["message"]


def test_a_file_damaged_mid_file_with_its_footer_intact_is_named_in_sparks_error(spark, tmp_path):
    rows = [(f"id{i}", i, synth_jpeg(0, i)) for i in range(8)]
    data = write_images(tmp_path / "data", rows)  # the up-front check reads footers only: it passes
    file = data.path / "part-0.parquet"
    chunk = pq.ParquetFile(file).metadata.row_group(0).column(2)  # the images' page header
    damaged = bytearray(file.read_bytes())
    damaged[chunk.data_page_offset : chunk.data_page_offset + 64] = b"\xab" * 64
    file.write_bytes(bytes(damaged))
    with pytest.raises(Exception) as failure:
        spark.read.parquet(str(data.path)).write.format("noop").mode("overwrite").save()
    error = describe_error(failure.value)
    assert "Py4J" not in error["type"] and "part-0.parquet" in error["message"], error


def test_a_killed_python_worker_names_the_task(spark, tmp_path):
    write_images(tmp_path / "data", [("x", 0, b"i")])

    def die(batches):
        import os
        import signal

        for batch in batches:
            os.kill(os.getpid(), signal.SIGKILL)
            yield batch

    frame = spark.read.parquet(str(tmp_path / "data")).mapInPandas(die, "id string, label int, image binary")
    with pytest.raises(Exception) as failure:
        frame.write.format("noop").mode("overwrite").save()
    message = describe_error(failure.value)["message"]
    assert message.startswith("task ") and "Python worker exited unexpectedly" in message, message


def odd_dir(tmp_path: Path, tables: dict[str, object]) -> Path:
    path = tmp_path / "odd"
    path.mkdir()
    for name, table in tables.items():
        if isinstance(table, (str, bytes)):
            (path / name).write_bytes(table.encode() if isinstance(table, str) else table)
        else:
            pq.write_table(table, path / name)
    return path


def image_table(ids, labels, label_type=None):
    schema = IMAGE_SCHEMA if label_type is None else IMAGE_SCHEMA.set(1, pa.field("label", label_type))
    return pa.table([ids, labels, [b"i"] * len(ids)], schema=schema)


@pytest.mark.parametrize(
    ("files", "named"),
    [
        (
            {"part-0.parquet": "good", "README.txt": "notes"},
            r"not Parquet, which Spark would read as Parquet: README.txt",
        ),
        (
            {"part-0.parquet": "good", "part-1.parquet": "typed"},
            r"column types disagree with part-0.parquet \(id string, label int32, image binary\): "
            r"part-1.parquet: label is int64",
        ),
        ({"part-0.parquet": "good", "part-1.parquet": "string label"}, r"part-1.parquet: column 'label' is string"),
        ({"part-0.parquet": "good", "part-1.parquet": "float label"}, r"part-1.parquet: column 'label' is double"),
        (
            {"part-0.parquet": "null label"},
            r"column 'label' is null in part-0.parquet row 1; every row needs an integer",
        ),
        ({"part-0.parquet": "null id"}, r"column 'id' is null in part-0.parquet row 0; every row needs its own id"),
        (
            {"part-0.parquet": b"junk" * 10, "part-1.parquet": "good", "part-2.parquet": b"more junk" * 10},
            r"cannot read Parquet file\(s\) in .*: part-0.parquet: .*; part-2.parquet: ",
        ),
    ],
)
def test_every_file_of_a_given_data_set_is_checked_up_front_naming_the_odd_ones(tmp_path, files, named):
    made = {
        "good": image_table(["a", "b"], [0, 1]),
        "typed": image_table(["c"], [2], pa.int64()),
        "string label": image_table(["c"], ["cat"], pa.string()),
        "float label": image_table(["c"], [2.0], pa.float64()),
        "null label": image_table(["a", "b"], [0, None]),
        "null id": image_table([None, "b"], [0, 1]),
    }
    path = odd_dir(tmp_path, {name: made.get(kind, kind) for name, kind in files.items()})
    with pytest.raises(DatasetError, match=named):
        prepare(compose_config("dataset=parquet", f"dataset.path={path}").dataset, tmp_path / "cache")


def test_files_spark_skips_are_skipped_up_front_too(tmp_path):
    path = odd_dir(tmp_path, {"part-0.parquet": image_table(["a"], [0]), "_SUCCESS": "", ".part-0.parquet.crc": "x"})
    assert prepare(compose_config("dataset=parquet", f"dataset.path={path}").dataset, tmp_path / "cache").num_files == 1


# --- a killed parent -------------------------------------------------------------------------------------------
CHILD = """
import signal, sys, time
from pathlib import Path
from pipeline.runtime.lifetime import die_with_parent
try:
    die_with_parent(int(sys.argv[1]), signal.SIGINT, every_s=0.1)
    print("ready", flush=True)
    time.sleep(120)
except KeyboardInterrupt:
    Path(sys.argv[2]).write_text("stopped its own way")
"""
PARENT = """
import subprocess, sys, os, time
child = subprocess.Popen([sys.executable, "-c", sys.argv[1], str(os.getpid()), sys.argv[2]], process_group=0)
print(child.pid, flush=True)
time.sleep(120)
"""


def gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True
        if state == "Z":
            return True
        time.sleep(0.1)
    return False


@pytest.mark.parametrize("platform", ["linux", "darwin"], ids=["pdeathsig", "watcher-thread"])
def test_a_child_tied_to_its_parent_runs_its_interrupt_path_when_the_parent_is_killed(tmp_path, platform):
    marker = tmp_path / "stopped"
    child_code = CHILD.replace("from pipeline", f"sys.platform = {platform!r}\nfrom pipeline")
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, child_code, str(marker)], stdout=subprocess.PIPE, text=True
    )
    child = int(parent.stdout.readline())
    try:
        assert parent.stdout.readline().strip() == "ready"  # the child has armed itself
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=30)
        assert gone(child, 30), "the child outlived its killed parent"
        assert marker.read_text() == "stopped its own way"
    finally:
        parent.stdout.close()
        for pid in (parent.pid, child):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.mark.slow
def test_a_killed_pipeline_takes_its_job_and_spark_application_with_it(tmp_path, cache_dir):
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "pipeline", "model=null_model", "dataset.num_images=8", "warmup=0"]
    command += ["repeats=500", f"hydra.run.dir={run_dir}", f"cache_dir={cache_dir}"]
    with open(tmp_path / "output.log", "w") as output:
        parent = subprocess.Popen(
            command, cwd=tmp_path, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
    seen: dict[int, int] = {}
    try:
        deadline = time.monotonic() + 300
        while parent.poll() is None and time.monotonic() < deadline:  # until the job's Python workers run tasks
            seen.update(tree([parent.pid]))
            if any("pyspark.daemon" in cmdline(pid) for pid in seen):
                break
            time.sleep(0.5)
        assert parent.poll() is None, (tmp_path / "output.log").read_text()[-3000:]
        seen.update(tree([parent.pid]))
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=30)
        left = wait_until_gone(seen, 120)
        assert left == [], [cmdline(pid) for pid in left]
        assert json.loads((run_dir / RESULT_FILE).read_text())["status"] == "interrupted"
    finally:
        for pid in survivors(seen):  # same PID and start time: never a stranger's process
            os.kill(pid, signal.SIGKILL)


# --- two runs generating the same data set, a killed generation ------------------------------------------------
def _prepare_in_a_process(cache: str, barrier, results) -> None:
    config = generated(24)
    barrier.wait()
    dataset = prepare(config, cache)
    results.put((dataset.generated, dataset.num_images))


def test_two_runs_needing_the_same_new_data_set_generate_it_once(tmp_path):
    context = get_context("spawn")
    barrier, results = context.Barrier(2), context.Queue()
    workers = [context.Process(target=_prepare_in_a_process, args=(str(tmp_path), barrier, results)) for _ in "ab"]
    for worker in workers:
        worker.start()
    try:
        outcomes = sorted(results.get(timeout=300) for _ in workers)
    finally:
        for worker in workers:
            worker.join(timeout=60)
            if worker.is_alive():
                worker.kill()
    assert outcomes == [(False, 24), (True, 24)]  # one generated it, the other waited and found it cached
    assert [p.name for p in (tmp_path / "datasets").iterdir() if ".tmp-" in p.name] == []


def dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


def test_a_staging_dir_left_by_a_killed_generation_is_removed_and_a_live_ones_kept(tmp_path, caplog):
    path = prepare(generated(2), tmp_path).path
    stale, live = (path.with_name(f"{path.name}.tmp-{pid}") for pid in (dead_pid(), os.getppid()))
    for staging in (stale, live):
        (staging / "part-00000.parquet").parent.mkdir()
        (staging / "part-00000.parquet").write_bytes(b"half")
    with caplog.at_level("WARNING", logger="pipeline.data.datasets"):
        assert prepare(generated(2), tmp_path).generated is False
    assert not stale.exists() and live.exists()
    assert f"removing {stale}" in caplog.text

    shutil.rmtree(live)


GENERATE = """
import sys
from tests.helpers.config import compose_config
from pipeline.data.datasets import prepare
prepare(compose_config("dataset.num_images=1024").dataset, sys.argv[1])
"""


def test_a_generation_killed_by_sigkill_leaves_no_worker_and_its_staging_dir_goes_next_time(tmp_path):
    job = subprocess.Popen([sys.executable, "-c", GENERATE, str(tmp_path)], cwd=Path(__file__).parents[1])
    seen: dict[int, int] = {}
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and job.poll() is None:  # until both pool workers run
            seen.update(tree([job.pid]))
            if sum("spawn_main" in cmdline(pid) for pid in seen) >= 2:
                break
            time.sleep(0.2)
        assert job.poll() is None and len(seen) >= 3, [cmdline(pid) for pid in seen]
        time.sleep(1)
        seen.update(tree([job.pid]))
        os.kill(job.pid, signal.SIGKILL)
        job.wait(timeout=30)
        left = wait_until_gone(seen, 30)
        assert left == [], [cmdline(pid) for pid in left]
        staging = [p for p in (tmp_path / "datasets").iterdir() if ".tmp-" in p.name]
        assert [p.name.rsplit("-", 1)[1] for p in staging] == [str(job.pid)]
        path = staging[0].with_name(staging[0].name.split(".tmp-")[0])
        _remove_stale_staging(path)  # what the next prepare of this data set does first, under the lock
        assert not staging[0].exists()
    finally:
        for pid in survivors(seen):  # same PID and start time: never a stranger's process
            os.kill(pid, signal.SIGKILL)


# --- an unwritable run dir; a single run's callbacks -----------------------------------------------------------
def test_a_run_dir_that_cannot_be_made_is_one_line_not_hydras_trace(tmp_path):
    (tmp_path / "a-file").write_text("")
    done = cli(tmp_path, f"hydra.run.dir={tmp_path / 'a-file' / 'run'}", timeout=120)
    assert done.returncode == 1
    assert f"error: cannot write the run directory {tmp_path / 'a-file' / 'run'} (hydra.run.dir): " in done.stderr
    assert "is not a directory" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout and "Unable to configure handler" not in done.stderr


def test_a_read_only_run_dir_stops_before_hydra_configures_its_log_file(tmp_path, monkeypatch, capsys):
    """Tests here run as root, for whom chmod cannot make a directory read-only: the refusal is simulated."""

    def refuse(directory):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(callbacks, "_probe", refuse)
    run_dir = tmp_path / "read-only" / "run"
    run_dir.parent.mkdir()
    config = OmegaConf.create({"hydra": {"run": {"dir": str(run_dir)}}})
    with pytest.raises(SystemExit) as stop:
        callbacks.SweepProgress().on_run_start(config)
    assert stop.value.code == 1
    err = capsys.readouterr().err
    assert f"cannot write the run directory {run_dir} (hydra.run.dir): {run_dir.parent} is not writable" in err
    assert not run_dir.exists()  # nothing created


def test_a_writable_run_dir_passes_and_is_not_created(tmp_path):
    callbacks.SweepProgress().on_run_start(OmegaConf.create({"hydra": {"run": {"dir": str(tmp_path / "x" / "y")}}}))
    assert list(tmp_path.iterdir()) == []


def test_a_single_run_logs_no_callback_warning(tmp_path):
    done = cli(tmp_path, "model.batch_size=0", f"hydra.run.dir={tmp_path}", timeout=120)
    assert done.returncode == 1
    assert "raised" not in done.stderr and "MissingMandatoryValue" not in done.stderr + done.stdout


def test_a_sweeps_job_still_prints_its_progress(capsys):
    progress = SweepProgress()
    progress.total = 4
    progress.on_job_start(OmegaConf.create({"hydra": {"job": {"num": 1, "override_dirname": "udf=map_in_arrow"}}}))
    assert "[sweep] job 2 of 4" in capsys.readouterr().out
    single = OmegaConf.create({"hydra": {"job": {"num": "???", "override_dirname": ""}}})
    progress.on_job_start(single)
    assert capsys.readouterr().out == ""
