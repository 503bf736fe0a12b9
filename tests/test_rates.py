"""Rates read from hand-made result.json and microbenchmark files; defaults where a figure is absent."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pipeline.projection.bottleneck import RAW_BYTES
from pipeline.projection.rates import DEFAULTS, measured_rates, microbenchmark_rates
from tests.helpers.results import write


def _result(path: Path, wall_s: list[float], num_images: int, **kwargs: Any) -> None:
    """An ok run (engine=torch unless said) with these timed passes' walls."""
    write(path, [num_images / wall for wall in wall_s], num_images=num_images, **({"engine": "torch"} | kwargs))


def _bench(path: Path, cases: dict[str, tuple[float, dict]]) -> Path:
    benchmarks = [
        {"stats": {"median": median}, "extra_info": {"case": name} | info} for name, (median, info) in cases.items()
    ]
    path.write_text(json.dumps({"benchmarks": benchmarks}))
    return path


def test_preprocess_from_one_process_null_model_runs(tmp_path: Path) -> None:
    # medians 0.5 s and 0.3 s over 100 images: 5 ms and 3 ms per image; their median 4 ms
    _result(tmp_path / "a", [0.4, 0.5, 0.6], 100)
    _result(tmp_path / "b", [0.3], 100)
    _result(tmp_path / "spark", [0.1], 100, engine="spark")  # not a one-process run: ignored
    _result(tmp_path / "workers", [0.1], 100, loader_workers=2)  # preprocesses in 2 processes: ignored
    _result(tmp_path / "raw", [0.01], 100, image_format="raw")
    rates = measured_rates([tmp_path])
    assert rates.preprocess_s == pytest.approx(0.004)
    assert "2 engine=torch model=null_model" in rates.sources["preprocess_s"]
    assert measured_rates([tmp_path], image_format="raw").preprocess_s == pytest.approx(1e-4)
    assert rates.job_s == DEFAULTS["job_s"][0]
    assert rates.sources["job_s"].startswith("default: ")


def test_a_run_counts_once_however_the_directories_overlap_and_a_hidden_one_never(tmp_path: Path) -> None:
    _result(tmp_path / "a", [0.5], 100)  # 5 ms an image
    _result(tmp_path / "b", [0.3], 100)  # 3 ms
    _result(tmp_path / ".trash" / "c", [0.1], 100)  # 1 ms, hidden: [5, 5, 3] or [5, 3, 1] would give 5 or 3
    rates = measured_rates([tmp_path, tmp_path / "a"])
    assert rates.preprocess_s == pytest.approx(0.004)
    assert "2 engine=torch model=null_model" in rates.sources["preprocess_s"]


def test_defaults_when_nothing_is_on_disk(tmp_path: Path) -> None:
    rates = measured_rates([tmp_path], decoder="torchvision")
    assert rates.preprocess_s == DEFAULTS["preprocess_s/jpeg/torchvision"][0]
    assert all(source.startswith("default: ") for source in rates.sources.values())


def test_spark_costs_from_the_microbenchmark(tmp_path: Path) -> None:
    # batch sizes give 1, 4 and 16 batches per slot at 0.21, 0.24, 0.36 s: slope 0.01 s per batch; tiny_no_sleep
    # 0.31 s with 2 calls on 2 slots: job 0.30 s; the round trip 0.31 + 2 x 256 x RAW_BYTES x 1e-8 / 2 slots
    per_byte = 1e-8
    round_trip = 0.31 + 256 * 2 * RAW_BYTES * per_byte / 2
    cases = {
        "image_round_trip@128": (0.21, {"calls": 2, "slots": 2, "images": 256}),
        "image_round_trip@32": (0.24, {"calls": 8, "slots": 2, "images": 256}),
        "image_round_trip@8": (0.36, {"calls": 32, "slots": 2, "images": 256}),
        "tiny_no_sleep": (0.31, {"calls": 2, "slots": 2, "images": 256}),
        "image_round_trip": (round_trip, {"calls": 2, "slots": 2, "images": 256}),
    }
    found = microbenchmark_rates(_bench(tmp_path / "bench.json", cases))
    assert found["batch_s"][0] == pytest.approx(0.01)
    assert found["job_s"][0] == pytest.approx(0.30)
    assert found["transfer_s_per_byte"][0] == pytest.approx(per_byte)
    rates = measured_rates([tmp_path], microbenchmark=tmp_path / "bench.json")
    assert rates.job_s == pytest.approx(0.30)
    assert "bench.json" in rates.sources["job_s"]


def test_a_negative_batch_slope_is_left_to_the_default(tmp_path: Path) -> None:
    cases = {
        "image_round_trip@128": (0.67, {"calls": 2, "slots": 2, "images": 256}),
        "image_round_trip@8": (0.52, {"calls": 32, "slots": 2, "images": 256}),
    }
    assert "batch_s" not in microbenchmark_rates(_bench(tmp_path / "bench.json", cases))


def test_spark_cost_per_task_from_a_null_model_runs_time_split(tmp_path: Path) -> None:
    # a fused stage of 4 tasks: 2.6 s of task run, of which each task's UDF record spans 0.25 s, and 10 MB
    # through Arrow (priced apart at the default per-byte rate): (2.6 - 4 x 0.25 - 1e7 x rate) / 4 a task
    records = {"records": [{"stage": 3, "start": 10.0 + i, "end": 10.25 + i} for i in range(4)]}
    moved = {"bytes_to_python": 9e6, "bytes_from_python": 1e6}
    stage = {"stage_id": 3, "step": "fused", "task_run_s": 2.6, "spark": moved}
    _result(tmp_path / "null", [1.0], 128, engine="spark", tasks=records, evidence={"time": [stage]})
    _result(tmp_path / "resnet", [1.0], 128, engine="spark", model="resnet50")  # a real model: not a cost of Spark's
    rates = measured_rates([tmp_path])
    assert rates.task_s == pytest.approx((1.6 - 1e7 * DEFAULTS["transfer_s_per_byte"][0]) / 4)
    assert "1 Spark null-model or device-bound run" in rates.sources["task_s"]


def test_a_device_bound_simulated_run_measures_the_cost_per_task_a_cpu_bound_one_does_not(tmp_path: Path) -> None:
    """Its tasks mostly sleep inside the UDF: the time outside it is Spark's, not a wait for a core."""
    records = {"records": [{"stage": 3, "start": 10.0 + i, "end": 10.25 + i} for i in range(4)]}
    stage = {"stage_id": 3, "step": "fused", "task_run_s": 2.6, "spark": {}}
    for name, busy in (("bound", 0.7), ("cpu-bound", 0.04)):
        evidence = {"time": [stage], "simulated_device": {"busy_fraction": busy}}
        _result(tmp_path / name, [1.0], 128, engine="spark", model="accelerator", tasks=records, evidence=evidence)
    rates = measured_rates([tmp_path])
    assert rates.task_s == pytest.approx(0.4) and "/bound/" in rates.sources["task_s"]
    assert "cpu-bound" not in rates.sources["task_s"]
    assert measured_rates([tmp_path], leave_out=[tmp_path / "bound"]).task_s == DEFAULTS["task_s"][0]


def test_the_model_servers_request_and_cpu_costs_from_a_served_accelerator_run(tmp_path: Path) -> None:
    # 8 requests of 32 images to a device of 1 ms + 32 / 3000 s and 0.03 ms a host image: a law of 12.63 ms a
    # request. The server used 0.19 CPU s for 256 images: 0.742 ms an image, 0.712 ms beyond the host cost. The
    # served tasks' model phase took 2 x 0.2 s = 50 ms a request, of which 2 ms queued and 0.5 ms waited for the
    # device: 50 - 12.63 - 2.5 - 32 x 0.712 = 12.08 ms a request is the client's and gRPC's
    served = {"requests": 8, "images": 256, "cpu_s": 0.19, "queue_ms": 16.0, "device_wait_s": 0.004}
    _result(
        tmp_path / "served",
        [1.0],
        256,
        engine="spark",
        model="accelerator",
        topology="model_server",
        config={"device": {"latency_s": 0.001, "images_per_s": 3000.0, "host_s_per_image": 3e-5}},
        tasks={"records": [{"step": "served", "finish_s": 0.2}, {"step": "served", "finish_s": 0.2}]},
        evidence={"server": {"last_pass": served}},
    )
    _result(tmp_path / "fused", [1.0], 256, engine="spark", model="accelerator", topology="fused")  # no server
    rates = measured_rates([tmp_path])
    serve_cpu = 0.19 / 256 - 3e-5
    assert rates.serve_cpu_s_per_image == pytest.approx(serve_cpu)
    assert rates.request_s == pytest.approx(0.05 - (0.001 + 32 / 3000 + 32 * 3e-5) - 0.0025 - 32 * serve_cpu)
    assert "1 topology=model_server model=accelerator run" in rates.sources["request_s"]
