"""Nothing lost, every failure explained (issue 17): re-runs into a used run dir, damaged caches, repeated ids,
Spark-side errors, killed processes, read-only run dirs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.job import PREVIOUS_RESULT_FILE, keep_earlier_result
from pipeline.results import RESULT_FILE
from pipeline.spark.eventlog import event_log_file
from pipeline.spark.session import fresh_event_log_dir, spark_conf
from tests.conftest import compose_config
from tests.test_cli import cli


# --- a run dir used before -------------------------------------------------------------------------------------
def test_a_new_application_starts_with_an_empty_event_log_dir_and_the_old_logs_kept_aside(tmp_path):
    from pipeline.spark.cluster import cluster

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


# --- a damaged cache -------------------------------------------------------------------------------------------
def synthetic(num_images: int, *overrides: str):
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
    from pipeline.data.datasets import prepare

    first = prepare(synthetic(6), tmp_path)
    damage(first.path)
    with caplog.at_level("WARNING", logger="pipeline.data.datasets"):
        again = prepare(synthetic(6), tmp_path)
    assert again.generated is True and again.path == first.path
    assert (again.num_images, again.num_files) == (6, 3)
    assert why in caplog.text and "generating it again" in caplog.text
    assert prepare(synthetic(6), tmp_path).generated is False  # and now it proves itself


def test_a_cached_data_set_records_every_file_with_its_rows_and_bytes(tmp_path):
    from pipeline.data.datasets import META_FILE, prepare

    dataset = prepare(synthetic(3), tmp_path)
    meta = json.loads((dataset.path / META_FILE).read_text())
    assert meta["spec"] == dataset.spec
    assert meta["files"] == [
        {"name": file.name, "rows": rows, "bytes": file.stat().st_size}
        for file, rows in zip(sorted(dataset.path.glob("*.parquet")), [2, 1])
    ]


def given_parquet(path: Path, rows: int) -> Path:
    from tests.conftest import write_images

    return write_images(path, [(f"id-{i}", i, b"x") for i in range(rows)]).path


@pytest.mark.parametrize("num_images", [3, 5])
def test_given_parquet_with_another_row_count_than_dataset_num_images_says_so(tmp_path, num_images):
    from pipeline.data.datasets import DatasetError, prepare

    path = given_parquet(tmp_path / "given", 4)
    config = compose_config("dataset=parquet", f"dataset.path={path}", f"dataset.num_images={num_images}").dataset
    with pytest.raises(DatasetError, match=rf"dataset.num_images={num_images}, but .* holds 4 rows in 1 files"):
        prepare(config, tmp_path / "cache")
    exact = compose_config("dataset=parquet", f"dataset.path={path}", "dataset.num_images=4").dataset
    assert prepare(exact, tmp_path / "cache").num_images == 4


# --- repeated ids ----------------------------------------------------------------------------------------------
def jpeg_rows(ids: list[str]) -> list[tuple[str, int, bytes]]:
    from pipeline.data import synthetic

    return [(image_id, index, synthetic.synth_jpeg(3, index)) for index, image_id in enumerate(ids)]


REPEATING = ["a", "b", "a", "c", "d", "c", "e", "f"]  # row 2 repeats row 0, row 5 row 3: at batch starts for 1 and 2


def test_repeated_ids_are_refused_before_any_engine_work_naming_the_ids_and_rows(tmp_path):
    from pipeline.data.datasets import DatasetError, prepare
    from tests.conftest import write_images

    path = tmp_path / "given"
    with pytest.raises(DatasetError, match=r"2 ids repeat.*'a' \(part-0.parquet rows 0, 2\), 'c' \(part-0.parquet rows 3, 5\)"):
        write_images(path, jpeg_rows(REPEATING))
    config = compose_config("dataset=parquet", f"dataset.path={path}").dataset
    with pytest.raises(DatasetError, match="ids repeat"):
        prepare(config, tmp_path / "cache")


def test_an_id_repeated_across_files_names_both_files(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.data.datasets import IMAGE_SCHEMA, DatasetError, describe

    tmp_path.mkdir(exist_ok=True)
    for number, ids in enumerate([["x", "y"], ["z", "x"]]):
        table = pa.table([ids, [0, 0], [b"i", b"j"]], schema=IMAGE_SCHEMA)
        pq.write_table(table, tmp_path / f"part-{number}.parquet")
    with pytest.raises(DatasetError, match=r"1 ids repeat.*'x' \(part-0.parquet row 0; part-1.parquet row 1\)"):
        describe(tmp_path, {}, False, 0.0)


PER_BATCH = [(style, rows) for style in ("scalar_pandas_udf", "predict_batch_udf") for rows in (1, 2, 3)]
WHOLE = [(style, 2) for style in ("map_in_pandas", "map_in_arrow", "iterator_pandas_udf", "rdd_map_partitions")]


@pytest.mark.parametrize(("style", "rows"), PER_BATCH + WHOLE)
def test_each_batch_is_its_own_record_even_when_batches_start_with_the_same_id(spark, tmp_path, style, rows):
    """The engine never sees repeated ids (they are refused above); the ledger must not depend on it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.data.datasets import IMAGE_SCHEMA, Dataset
    from pipeline.engines.spark import measure
    from pipeline.inference.model import ModelSpec
    from pipeline.inference.preprocess import Preprocessing
    from pipeline.inference.steps import Inference

    data = tmp_path / "data"
    data.mkdir()
    ids, labels, images = zip(*jpeg_rows(REPEATING))
    pq.write_table(pa.table([list(ids), list(labels), list(images)], schema=IMAGE_SCHEMA), data / "part-0.parquet")
    dataset = Dataset(data, 8, 1, (data / "part-0.parquet").stat().st_size, {}, False, 0.0)  # describe bypassed
    inference = Inference(preprocessing=Preprocessing(), model=ModelSpec(name="null_model"), batch_size=rows)
    config = compose_config(f"udf={style}", "model=null_model", "warmup=0", "repeats=1")
    keys = ("spark.sql.execution.arrow.maxRecordsPerBatch", "spark.sql.parquet.columnarReaderBatchSize")
    try:
        for key in keys:
            spark.conf.set(key, str(rows))
        timed = measure(spark, config, dataset, inference, tmp_path, predict_slots=2).timed[0]
    finally:
        for key in keys:
            spark.conf.set(key, "128")
    assert (timed.read, timed.predicted, len(timed.bad)) == (8, 8, 0)
