"""Slot utilization per stage: a skewed split (one task slot idle most of a stage) is flagged, a balanced one
is not, measured from the event log of a real Spark job on the test session's local[2]."""

from __future__ import annotations

import time
import uuid

import pytest

from pipeline.config.schema import Topology
from pipeline.data.datasets import prepare
from pipeline.spark.evidence import EvidenceMissing, check, collect
from pipeline.spark.plan import plan
from pipeline.spark.session import split_bytes
from pipeline.spark.utilization import slot_usage
from tests.helpers.config import compose_config
from tests.helpers.eventlog import completed_stages, job_start, write_log
from tests.helpers.spark import sql_conf


def test_one_slot_busy_over_two_slots_is_idle_most_of_the_window():
    usage = slot_usage([(0.0, 10.0), (0.0, 0.5)], 0.0, 10.0, slots=2)
    assert usage["idle_slot_fraction"] == pytest.approx(0.95)
    assert usage["slot_utilization"] == pytest.approx(10.5 / 20)


def test_two_slots_busy_side_by_side_are_never_idle():
    usage = slot_usage([(0.0, 4.0), (4.0, 10.0), (0.0, 10.0)], 0.0, 10.0, slots=2)
    assert usage["idle_slot_fraction"] == 0.0 and usage["slot_utilization"] == 1.0


def test_intervals_are_clipped_to_the_stage_and_an_empty_stage_has_no_figure():
    usage = slot_usage([(-5.0, 2.0), (8.0, 20.0)], 0.0, 10.0, slots=1)
    assert usage["busy_s"] == pytest.approx(4.0) and usage["idle_slot_fraction"] == pytest.approx(0.6)
    assert slot_usage([], 3.0, 3.0, slots=2)["slot_utilization"] is None


def _slow_rows(batches):
    """Each row takes 100 ms: a task's time is its rows', so an empty task is over at once."""
    for batch in batches:
        time.sleep(0.1 * len(batch))
        yield batch[["id"]]


def _stage_evidence(spark, dataset) -> dict:
    """Read `dataset` with the split size a run would use, 100 ms per row, twice (the first starts the Python
    workers, which keeps both tasks busy whatever their rows), and the second's stages' evidence, read from
    the session's event log once the listener has written the job's stage (it writes asynchronously)."""
    description = f"utilization test {uuid.uuid4().hex[:8]}"
    context = spark.sparkContext
    with sql_conf(
        spark, "spark.sql.files.maxPartitionBytes", str(split_bytes(dataset.size_bytes, 2, dataset.largest_file_bytes))
    ):
        slow = spark.read.parquet(str(dataset.path)).mapInPandas(_slow_rows, "id string")  # reads the footers
        try:
            for name in (f"{description} warm-up", description):  # as a run: workers start in the warm-up
                context.setJobDescription(name)  # the one job of the write, not the schema's
                slow.write.format("noop").mode("overwrite").save()
        finally:
            context.setJobDescription(None)
    log_dir, _ = completed_stages(spark, lambda stage: stage["job_description"] == description)
    return collect(log_dir, [], description, slots=2, model_slots=2)


@pytest.mark.parametrize(
    ("overrides", "rows", "flagged"),
    [
        (["dataset.num_images=16"], [0, 16], True),  # one 32-row row group: one task reads everything
        (["dataset.num_images=16", "dataset.images_per_file=8"], [8, 8], False),  # a file per slot
        # files of over 1 MiB, one a little larger than its slot's share: still one task each, none empty
        (["dataset.num_images=32", "dataset.images_per_file=16", "dataset.row_group_size=8"], [16, 16], False),
    ],
    ids=["skewed", "balanced", "unequal_files"],
)
def test_a_slot_idle_most_of_a_stage_is_flagged(spark, cache_dir, overrides, rows, flagged):
    config = compose_config(*overrides, "cluster.cores=2", f"cache_dir={cache_dir}")
    found = _stage_evidence(spark, prepare(config.dataset, cache_dir))
    (stage,) = found["stages"]
    assert sorted(stage["rows_per_task"]) == rows
    assert stage["slots"] == 2 and 0 < stage["slot_utilization"] <= 1
    checks = check(found, plan(config), Topology.fused)
    assert checks["every_slot_busy"] is not flagged
    assert bool(checks["idle_slot_stages"]) is flagged
    if flagged:
        assert stage["idle_slot_fraction"] > 0.5 and "rows per task [16, 0]" in checks["idle_slot_stages"][0]
    else:
        assert stage["idle_slot_fraction"] < 0.5


def test_an_event_log_cut_short_before_the_pass_fails_the_evidence_naming_the_log(tmp_path):
    """Spark only logs an error when it cannot write its event log (a full run dir): the stages of the pass are
    then missing, and a result that claimed an idle-free, fault-free pass from nothing would lie."""
    log_dir = tmp_path / "eventlog"
    log_dir.mkdir()
    write_log(log_dir / "app-1", [job_start(0, [0], "pass 1 (warm-up)")])
    with pytest.raises(EvidenceMissing, match=r"app-1 holds no stage of 'pass 2 \(timed\)'"):
        collect(log_dir, [], "pass 2 (timed)", slots=2, model_slots=2)
