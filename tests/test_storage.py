"""The storage root: where a run's data sets and task-side files go, on one machine and on a cluster of others."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config.schema import ConfigError
from pipeline.data.storage import Storage, check, local_path, parquet_sizes, run_id


def test_without_a_storage_root_the_run_dir_and_cache_dir_serve_as_before(tmp_path):
    places = Storage.of(None, tmp_path / "run", tmp_path / "cache")
    assert places.dataset_cache == tmp_path / "cache"
    assert (places.tasks, places.predictions, places.intermediate) == (
        tmp_path / "run" / "tasks",
        tmp_path / "run" / "predictions",
        tmp_path / "run" / "intermediate",
    )


def test_a_storage_root_holds_the_data_sets_and_each_runs_own_area(tmp_path):
    places = Storage.of(str(tmp_path / "shared"), tmp_path / "outputs" / "2026-12-06" / "14-00-00", tmp_path / "cache")
    assert places.dataset_cache == tmp_path / "shared"
    assert places.run_area.path.parent == tmp_path / "shared" / "runs"
    assert places.run_area.path.name.startswith("outputs_2026-12-06_14-00-00-")
    assert {places.tasks.parent, places.predictions.parent, places.intermediate.parent} == {places.run_area.path}


def test_two_run_dirs_of_the_same_second_get_different_areas(tmp_path):
    assert run_id(tmp_path / "a" / "multirun" / "0") != run_id(tmp_path / "b" / "multirun" / "0")


def test_a_file_uri_is_the_same_directory_as_its_path(tmp_path):
    assert local_path(tmp_path.as_uri()) == local_path(str(tmp_path)) == tmp_path.resolve()


@pytest.mark.parametrize("uri", ["s3://bucket/root", "gs://bucket/root", "hdfs://namenode/root"])
def test_a_storage_root_by_an_object_store_uri_is_refused_before_any_work(uri):
    with pytest.raises(ConfigError, match=f"storage={uri!r}: .* is not served yet"):
        check(uri)


def test_parquet_sizes_are_those_of_the_parquet_files_under_a_directory(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "part-0.parquet").write_bytes(b"x" * 10)
    (tmp_path / "part-1.parquet").write_bytes(b"x" * 3)
    (tmp_path / "_SUCCESS").write_bytes(b"")
    assert sorted(parquet_sizes(tmp_path)) == [3, 10]
    assert parquet_sizes(Path(tmp_path / "missing")) == []
