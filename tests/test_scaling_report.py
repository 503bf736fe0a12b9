"""The report's scaling section (`reports.scaling`): each run of the scaling sweep a point, measured against the
ideal line and the bottleneck model's prediction for its shape, with the nodes that ran its tasks; the targets
printed, met or not."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.projection.bottleneck import device_of, predict, shape_of
from pipeline.projection.rates import measured_rates
from pipeline.provenance import config_record, new_result
from pipeline.results import write_result
from reports import scaling
from reports.build import build
from tests.helpers.config import compose_config

ONE_MACHINE = "boot-a"


def scaling_result(run_dir: Path, mode: str, workers: int, throughput: float) -> None:
    """The result.json of an ok scaling run on `workers` namespace nodes of one 2-core machine."""
    config = compose_config(
        "cluster=remote",
        "cluster.master=spark://10.0.0.2:7077",
        f"cluster.workers={workers}",
        "cluster.worker_cores=1",
        "model=accelerator",
        "gpu.emulate=1",
        "device.images_per_s=10",
        f"+scaling={mode}",
        "dataset.images_per_file=16",
        "dataset.row_group_size=16",
    )
    result = new_result(config, run_dir)
    result.status, result.metrics.throughput_images_per_s = "ok", throughput
    result.metrics.num_images = config.dataset.num_images
    result.metrics.wall_s, result.metrics.throughput_per_repeat = [config.dataset.num_images / throughput], [throughput]
    result.config, result.env["cpu_count"] = config_record(config), 2
    result.cluster = {"gpus": {"task_amount": 1.0}}
    nodes = {f"node-{i}": {"tasks": 4, "machine": ONE_MACHINE, "cpu_count": 2} for i in range(1, workers + 1)}
    result.evidence = {"task_nodes": nodes, "simulated_device": {"busy_fraction": 0.8, "load_average_1m": 12.0}}
    run_dir.mkdir(parents=True)
    write_result(run_dir, result)


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    for number, (mode, workers, throughput) in enumerate(
        [("weak", 1, 8.0), ("weak", 2, 15.0), ("weak", 3, 21.0), ("strong", 1, 9.0), ("strong", 2, 16.0)]
    ):
        scaling_result(tmp_path / str(number), mode, workers, throughput)
    return tmp_path


def test_each_point_has_its_ideal_from_the_fewest_nodes_and_the_nodes_that_ran_it(sweep):
    found = scaling.points([sweep])
    assert [(p.mode, p.nodes, p.images, p.measured, p.ideal) for p in found] == [
        ("strong", 1, 192, 9.0, 9.0),
        ("strong", 2, 192, 16.0, 18.0),
        ("weak", 1, 64, 8.0, 8.0),
        ("weak", 2, 128, 15.0, 16.0),
        ("weak", 3, 192, 21.0, 24.0),
    ]
    assert found[-1].ran_on == ("node-1", "node-2", "node-3") and found[-1].machines == 1
    assert scaling.speedups(found) == {(p.mode, p.series): p.measured / p.ideal * 2 for p in found if p.nodes == 2}


def test_a_point_is_predicted_by_the_bottleneck_model_with_its_nodes_sharing_their_machine(sweep):
    point = scaling.points([sweep])[-1]  # weak, 3 nodes on one 2-core machine
    config = config_record(
        compose_config(
            "cluster=remote",
            "cluster.master=spark://10.0.0.2:7077",
            "cluster.workers=3",
            "cluster.worker_cores=1",
            "model=accelerator",
            "gpu.emulate=1",
            "device.images_per_s=10",
            "+scaling=weak",
            "dataset.images_per_file=16",
            "dataset.row_group_size=16",
        )
    )
    topology, shape, workload = shape_of(config, 2, {"task_amount": 1.0}, node_cpus=2.0)
    assert shape.cpus_per_node == pytest.approx(2 / 3) and workload.num_images == 192
    expected = predict(topology, measured_rates([sweep]), device_of(config), shape, workload)
    assert point.predicted == pytest.approx(expected.images_per_s) and point.predicted_bound == expected.bound


def test_the_targets_are_printed_met_or_not(sweep):
    lines = scaling.summary([sweep])
    targets = [line for line in lines if line.startswith("scaling target: ")]
    assert targets[0].startswith("scaling target: strong") and targets[0].endswith("1.78 (>= 1.8: NOT met)")
    assert targets[1].startswith("scaling target: weak") and targets[1].endswith("1.88 (>= 1.8: met)")
    assert "of 5 points predicted within 0.8-1.25x" in targets[2]


def test_the_report_has_the_scaling_section_with_measured_ideal_and_predicted(sweep):
    _, html = build([sweep], sweep)
    text = html.read_text()
    assert 'id="scaling"' in text and "Throughput against nodes" in text
    for column in ("measured img/s", "ideal img/s", "predicted img/s", "nodes that ran tasks"):
        assert column in text


def test_a_sweep_without_scaling_runs_has_no_scaling_section(tmp_path):
    assert scaling.summary([tmp_path]) == []
