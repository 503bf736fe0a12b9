"""The report, from hand-written result files only (tests/fixtures/results/sweep): no Spark, no model.

The fixture sweep: 0 map_in_pandas/fused/local bs 32 and 1 map_in_arrow/split/local bs 64 (with task
timelines), 2 iterator_pandas_udf/two_stage/standalone bs 32 (preprocess on 2 x m6gd.12xlarge, predict on
1 x g4dn.12xlarge), 3 map_in_pandas/stage_level/standalone bs 16 with emulated GPUs, a timeline and 2 bad
images, 4 failed (ClusterError), 5 a job dir without result.json (only a stale `.result.json.*.tmp`).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf
from PIL import Image

from pipeline.callbacks import SweepProgress
from pipeline.runtime.process_cpu import DRIVER, DRIVER_JVM, PYTHON_WORKERS
from reports.__main__ import main
from reports.aggregate import CSV_COLUMNS, comparable, find_jobs, job_frame
from reports.build import build
from reports.cost import CostUnavailable, UnknownInstance, run_cost
from reports.microbench import decomposition
from reports.microbench import load as load_microbenchmark
from reports.pareto import best, pareto_front
from reports.plots import task_timeline, throughput_bars
from tests.helpers.results import write

SWEEP = Path(__file__).parent / "fixtures" / "results" / "sweep"
CHROMIUM = Path("/usr/bin/chromium")
SECTIONS = (
    "Summary",
    "Throughput",
    "Cost per million images",
    "Throughput vs cost",
    "Task timelines",
    "Stage times",
    "Bad images",
    "Failed and missing jobs",
    "Prices",
    "Provenance",
)
PRICES = {
    "g4dn.12xlarge": {"usd_per_hour": 3.912, "region": "us-east-1", "source": "AWS list", "date": "2026-11"},
    "m6gd.12xlarge": {"usd_per_hour": 2.1696, "region": "us-east-1", "source": "AWS list", "date": "2026-11"},
    "this_machine": {"usd_per_hour": 0.1134, "region": "us-east-1", "source": "assumed", "date": "2026-11"},
}


def record(nodes, wall_s=(), num_images=1000, topology="fused", preprocess_nodes=None, job_s=None) -> dict:
    """The parts of a result.json that cost.py reads."""
    preprocess_cluster = None
    if preprocess_nodes is not None:
        preprocess_cluster = {"nodes": [{"role": r, "instance": i, "count": c} for r, i, c in preprocess_nodes]}
    return {
        "config": {
            "cluster": {
                "nodes": [{"role": role, "instance": instance, "count": count} for role, instance, count in nodes]
            },
            "topology": {"kind": topology, "preprocess_cluster": preprocess_cluster},
            "cost": {"name": "aws_on_demand", "prices": PRICES},
        },
        "metrics": {"num_images": num_images, "wall_s": list(wall_s), "job_s": job_s or {}},
    }


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return job_frame(find_jobs([SWEEP]))


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return build([SWEEP], tmp_path_factory.mktemp("report"))


@pytest.fixture(scope="module")
def html(report: tuple[Path, Path]) -> str:
    return report[1].read_text()


def copy_job(source: Path, job_dir: Path, **env: str) -> None:
    """A copy of one fixture job, with env fields (and the matching variant field) replaced."""
    job_dir.mkdir(parents=True)
    result = json.loads((source / "result.json").read_text())
    result["env"].update(env)
    result["variant"].update({key: value for key, value in env.items() if key in result["variant"]})
    (job_dir / "result.json").write_text(json.dumps(result))


# ------------------------------------------------------------------------------------------------ aggregate


def test_one_row_per_job_dir_with_the_variant_columns(frame: pd.DataFrame) -> None:
    assert [Path(job_dir).name for job_dir in frame["job_dir"]] == ["0", "1", "2", "3", "4", "5"]
    assert set(CSV_COLUMNS) <= set(frame.columns)
    assert list(frame["udf"][:4]) == ["map_in_pandas", "map_in_arrow", "iterator_pandas_udf", "map_in_pandas"]
    assert list(frame["batch_size"][:4]) == [32, 64, 32, 16]
    assert frame.loc[3, "throughput_per_repeat"] == pytest.approx(
        [64 / 8.127321114999631, 64 / 7.559184021999954, 64 / 8.143167218999679]
    )
    assert frame.loc[3, "gpus"] == "emulated"


def test_labels_name_each_variant_readably(frame: pd.DataFrame) -> None:
    assert frame.loc[1, "label"] == "map_in_arrow · split · local · bs=64"
    assert frame["label"][:5].is_unique


def test_failed_job_is_a_row_with_its_reason(frame: pd.DataFrame) -> None:
    failed = frame.loc[4]
    assert failed["status"] == "failed"
    assert failed["reason"] == (
        "ClusterError: the standalone worker exited with status 1 while waiting for the workers to register"
    )
    assert pd.isna(failed["throughput_images_per_s"]) and pd.isna(failed["usd_per_million_images"])


def test_job_dir_without_result_is_counted_missing(frame: pd.DataFrame) -> None:
    missing = frame.loc[5]
    assert missing["status"] == "missing"
    assert missing["reason"].startswith("no result.json")
    assert missing["label"] == "udf=rdd_map_partitions model.batch_size=32"  # from .hydra/overrides.yaml


def test_temporary_result_files_are_never_read() -> None:
    assert (SWEEP / "5" / ".result.json.4242.tmp").is_file()
    assert find_jobs([SWEEP])[5].result is None


def test_unreadable_result_is_a_row_not_a_crash(tmp_path: Path) -> None:
    (tmp_path / "0").mkdir()
    (tmp_path / "0" / "result.json").write_text('{"status": "ok", "metr')
    row = job_frame(find_jobs([tmp_path])).loc[0]
    assert row["status"] == "unreadable" and "is not JSON" in row["reason"]


def test_job_whose_process_died_is_labelled_by_its_overrides(tmp_path: Path) -> None:
    (tmp_path / "0" / ".hydra").mkdir(parents=True)
    (tmp_path / "0" / ".hydra" / "overrides.yaml").write_text("- udf=map_in_arrow\n")
    (tmp_path / "0" / "result.json").write_text(
        json.dumps(
            {  # what pipeline/__main__.py writes for a lost job
                "status": "failed",
                "variant": {},
                "config": {},
                "env": {},
                "error": {"type": "JobProcessDied", "message": "the job process exited with code -9 without a result"},
            }
        )
    )
    row = job_frame(find_jobs([tmp_path])).loc[0]
    assert (row["label"], row["reason"]) == (
        "udf=map_in_arrow",
        "JobProcessDied: the job process exited with code -9 without a result",
    )


def test_missing_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope"):
        find_jobs([tmp_path / "nope"])


# ----------------------------------------------------------------------------------------------------- cost


def test_cost_of_two_nodes_for_the_median_pass_by_hand() -> None:
    cost = run_cost(record([("worker", "g4dn.12xlarge", 2)], wall_s=[9.0, 10.0, 11.0], num_images=1000))
    # 2 x $3.912/h for 10 s = $0.0217333...; per image / 1000, x 1e6
    assert cost.usd_per_pass == pytest.approx(0.021733333333, rel=1e-9)
    assert cost.usd_per_million_images == pytest.approx(21.733333333, rel=1e-9)


def test_every_node_is_billed_including_the_driver() -> None:
    nodes = [("driver", "this_machine", 1), ("worker", "g4dn.12xlarge", 2)]
    cost = run_cost(record(nodes, wall_s=[3600.0], num_images=1_000_000))
    assert cost.usd_per_million_images == pytest.approx(0.1134 + 2 * 3.912)
    assert set(cost.prices) == {"this_machine", "g4dn.12xlarge"}


def test_two_stage_bills_each_job_on_its_own_nodes() -> None:
    cost = run_cost(
        record(
            [("worker", "g4dn.12xlarge", 1)],
            wall_s=[14.0, 18.0, 16.0],
            topology="two_stage",
            preprocess_nodes=[("worker", "m6gd.12xlarge", 2)],
            job_s={"preprocess": [4.0, 6.0, 5.0], "predict": [10.0, 12.0, 11.0]},
        )
    )
    # preprocess 2 x 2.1696 x 5 s + predict 3.912 x 11 s = 64.728 $·s/h -> $0.01798 for 1000 images
    assert cost.usd_per_pass == pytest.approx(0.01798, rel=1e-9)
    assert cost.usd_per_million_images == pytest.approx(17.98, rel=1e-9)
    assert cost.prices["m6gd.12xlarge"].source == "AWS list"


def test_two_stage_without_a_preprocess_cluster_bills_the_cluster_nodes() -> None:
    cost = run_cost(
        record(
            [("worker", "g4dn.12xlarge", 1)],
            topology="two_stage",
            job_s={"preprocess": [3600.0], "predict": [3600.0]},
            num_images=1_000_000,
        )
    )
    assert cost.usd_per_million_images == pytest.approx(2 * 3.912)


def test_unknown_instance_is_an_error_naming_it() -> None:
    with pytest.raises(
        UnknownInstance, match=r"instance 'p9\.huge' \(role worker\) has no price in cost=aws_on_demand"
    ):
        run_cost(record([("driver", "this_machine", 1), ("worker", "p9.huge", 4)], wall_s=[1.0]))


def test_result_without_cost_config_cannot_be_billed() -> None:
    with pytest.raises(CostUnavailable, match="no cost.prices"):
        run_cost({"config": {"cluster": {}}, "metrics": {"num_images": 64, "wall_s": [1.0]}})


# --------------------------------------------------------------------------------------------------- pareto


def test_pareto_front_of_hand_made_points() -> None:
    points = pd.DataFrame(
        {"speed": [10.0, 20.0, 15.0, 5.0, 20.0, 30.0, None], "usd": [5.0, 10.0, 12.0, 5.0, 10.0, 40.0, 1.0]},
        index=list("ABCDEFG"),
    )
    front = pareto_front(points, faster="speed", cheaper="usd")
    # C: B is faster and cheaper; D: A is as cheap and faster; B and E tie, so neither beats the other
    assert list(front[front].index) == ["A", "B", "E", "F"]
    assert best(points, faster="speed", cheaper="usd") == "A"


# ---------------------------------------------------------------------------------------------------- plots


def test_throughput_caption_says_n_and_what_bars_and_whiskers_mean(frame: pd.DataFrame) -> None:
    caption = throughput_bars(frame).caption
    assert "one bar a run (4 runs). Bars: the run's throughput" in caption
    assert "whiskers: min–max over its timed passes, n = 3 per bar" in caption


def test_a_bar_is_the_runs_throughput_and_its_whiskers_the_passes(tmp_path: Path) -> None:
    write(tmp_path / "0", [16.0, 8.0], num_images=64)  # walls of 4 and 8 s: 64 / 6 images/s, the table's figure
    frame = job_frame(find_jobs([tmp_path]))
    assert frame.loc[0, "throughput_images_per_s"] == pytest.approx(64 / 6)
    ax = throughput_bars(frame).figure.axes[0]
    assert [bar.get_height() for bar in ax.patches if bar.get_height()] == [pytest.approx(64 / 6)]
    whisker = [y for line in ax.lines for y in line.get_ydata() if y == y]  # the whisker and its caps; no NaN
    assert (min(whisker), max(whisker)) == (pytest.approx(8.0), pytest.approx(16.0))


def test_runs_of_different_image_counts_get_labels_and_bars_of_their_own(tmp_path: Path) -> None:
    write(tmp_path / "0", [8.0] * 3, num_images=64)
    write(tmp_path / "1", [31.0] * 3, num_images=1024)
    frame = job_frame(find_jobs([tmp_path]))
    assert list(frame["label"]) == [
        "map_in_pandas · fused · local · bs=32 · images=64",
        "map_in_pandas · fused · local · bs=32 · images=1024",
    ]
    heights = [bar.get_height() for bar in throughput_bars(frame).figure.axes[0].patches if bar.get_height()]
    assert sorted(heights) == [pytest.approx(8.0), pytest.approx(31.0)]


def test_runs_on_clusters_of_another_shape_get_labels_of_their_own(tmp_path: Path) -> None:
    config = {"cluster": {"mode": "local_cluster", "workers": 1, "worker_cores": 4}}
    for number, gpus in enumerate((1, 4)):
        plan = {"kind": "emulated", "per_worker": gpus, "executor_amount": gpus, "task_amount": 0.25}
        record = {"slots": 4, "gpus": plan | {"predict_task_amount": 1.0}}
        write(tmp_path / str(number), 10.0, cluster="local_cluster", config=config, cluster_record=record)
    labels = list(job_frame(find_jobs([tmp_path]))["label"])
    assert labels == [
        "map_in_pandas · fused · local_cluster · bs=32 · 4 slots, 1 emulated GPUs",
        "map_in_pandas · fused · local_cluster · bs=32 · 4 slots, 4 emulated GPUs",
    ]


def test_runs_are_compared_when_they_differ_in_the_compared_axes_only(tmp_path: Path) -> None:
    write(tmp_path / "0", 10.0, udf="map_in_pandas")
    write(tmp_path / "1", 12.0, udf="map_in_arrow")
    write(tmp_path / "2", 12.0, udf="map_in_arrow", cluster_record={"slots": 4})  # another cluster shape
    frame = job_frame(find_jobs([tmp_path]))
    groups = [(shared["shape"], list(group.index)) for shared, group in comparable(frame, ["udf"])]
    assert groups == [("4 slots", [2]), (None, [0, 1])]


def test_a_run_under_an_sc_server_is_a_connect_run(tmp_path: Path) -> None:
    config = {"cluster": {"mode": "remote", "master": "sc://127.0.0.1:15002"}}
    write(tmp_path / "0", 10.0, cluster="remote", config=config, cluster_record={"connect": {"url": "sc://..."}})
    write(tmp_path / "1", status="unavailable", cluster="remote", config=config)  # refused: no cluster record
    write(tmp_path / "2", 10.0, cluster="remote", config={"cluster": {"mode": "remote", "master": "spark://m:7077"}})
    assert list(job_frame(find_jobs([tmp_path]))["connect"]) == [True, True, False]


def test_cpu_an_image_is_the_median_passs_cpu_over_every_kind_of_process(tmp_path: Path) -> None:
    # passes of 1.1, 0.8 and 2.2 core-s: the median pass 1.1, not the kinds' medians summed (1.2) nor the mean (1.37)
    cpu = {DRIVER_JVM: [0.1, 0.5, 0.2], PYTHON_WORKERS: [1.0, 0.3, 2.0]}
    write(tmp_path / "0", [8.0] * 3, num_images=64, process_cpu_s=cpu)
    row = job_frame(find_jobs([tmp_path])).loc[0]
    assert row["cpu_core_ms_per_image"] == pytest.approx(1.1 / 64 * 1000)
    assert row["cpu_kinds"] == "driver jvm; python workers"


def test_a_run_that_recorded_no_cpu_has_an_empty_cell_not_zero(tmp_path: Path) -> None:
    write(tmp_path / "0", [8.0] * 3, process_cpu_s={PYTHON_WORKERS: [0.5] * 3})
    write(tmp_path / "1", [8.0] * 3)  # engine=torch or ray, or a run from before it was recorded
    csv_path, _ = build([tmp_path], tmp_path)
    table = pd.read_csv(csv_path, keep_default_na=False)
    assert list(table["cpu_core_ms_per_image"].astype(str)) == [str(0.5 / 64 * 1000), ""]
    assert list(table["cpu_kinds"]) == ["python workers", ""]


def test_timeline_has_one_row_per_executor_slot(frame: pd.DataFrame) -> None:
    chart = task_timeline(find_jobs([SWEEP])[3].result, frame.loc[3, "label"])
    labels = [tick.get_text() for tick in chart.figure.axes[0].get_yticklabels()]
    assert labels == [f"executor 0 · slot {slot}" for slot in range(4)]


def _task(host: str, executor: str, start: float) -> dict:
    place = {"stage_id": 1, "step": "served", "executor_id": executor, "host": host, "slot": 0}
    return place | {"start_s": start, "end_s": start + 1.0, "successful": True}


def test_a_timeline_of_several_nodes_groups_the_slots_by_node() -> None:
    timeline = [_task("10.0.0.4", "1", 0.0), _task("10.0.0.3", "0", 0.5), _task("10.0.0.4", "1", 1.0)]
    chart = task_timeline({"evidence": {"timeline": timeline}}, "run")
    labels = [tick.get_text() for tick in chart.figure.axes[0].get_yticklabels()]
    assert labels == ["10.0.0.3 · executor 0 · slot 0", "10.0.0.4 · executor 1 · slot 0"]
    assert "on 2 nodes (grouped by node)" in chart.caption


def test_slot_use_and_each_nodes_server_are_shown_per_node(tmp_path: Path) -> None:
    from reports.nodes import node_rows

    usage = {"slots": 1, "tasks": 2, "idle_slot_fraction": 0.1, "busy_s": 9.0}
    nodes = [
        {"host": "10.0.0.3", "executors": ["0"], "slot_utilization": 0.9, **usage},
        {"host": "10.0.0.4", "executors": ["1"], "slot_utilization": 0.5, **usage},
    ]
    served = {"last_pass": {"images": 8, "batches": 1, "cpu_ms_per_image": 12.34}}
    server = {"nodes": [{"node": "worker-1", "address": "10.0.0.3", **served}]}  # none found on 10.0.0.4
    write(tmp_path / "0", 10.0, topology="model_server", cluster="remote", evidence={"nodes": nodes, "server": server})
    write(tmp_path / "1", 10.0, evidence={"nodes": nodes[:1]})  # one node: nothing to show per node
    jobs = find_jobs([tmp_path])
    rows = node_rows(jobs, job_frame(jobs))
    assert [(r["node"], r["slot_use"], r["server_images"]) for r in rows] == [
        ("worker-1 (10.0.0.3)", "90%", 8),
        ("10.0.0.4", "50%", "–"),
    ]
    assert rows[0]["server_cpu_ms_per_image"] == "12.3"


# ----------------------------------------------------------------------------------------------- the files


def test_results_csv_has_one_row_per_job_with_reasons(report: tuple[Path, Path]) -> None:
    table = pd.read_csv(report[0], keep_default_na=False)
    assert list(table.columns) == list(CSV_COLUMNS)
    assert list(table["status"]) == ["ok", "ok", "ok", "ok", "failed", "missing"]
    assert table.loc[4, "reason"].startswith("ClusterError: the standalone worker exited")
    assert float(table.loc[2, "usd_per_million_images"]) == pytest.approx(17.98)


def summary_cells(html: str) -> list[dict[str, str]]:
    """The summary table's rows, each cell's text by its column heading."""
    table = html.split('id="summary-table"', 1)[1].split("</table>", 1)[0]
    head, body = table.split("</thead>", 1)
    headings = re.findall(r"<th>(.*?)</th>", head)
    return [dict(zip(headings, re.findall(r"<td[^>]*>(.*?)</td>", row))) for row in body.split("</tr>")[:-1]]


def test_summary_shows_cpu_an_image_and_says_what_it_counts(tmp_path: Path) -> None:
    write(tmp_path / "0", [8.0] * 3, num_images=64, process_cpu_s={DRIVER_JVM: [0.2] * 3, PYTHON_WORKERS: [1.0] * 3})
    write(tmp_path / "1", [8.0] * 3, udf="map_in_arrow")  # nothing recorded
    html = build([tmp_path], tmp_path)[1].read_text()
    assert [row["CPU core-ms / image"] for row in summary_cells(html)] == ["18.8", "–"]  # 1.2 core-s / 64 images
    assert "every process of the run on this machine" in html and "executors on other machines are not counted" in html


def test_cpu_an_image_of_a_run_whose_executors_were_elsewhere_says_driver_only(tmp_path: Path) -> None:
    config = {"cluster": {"mode": "remote", "master": "spark://m:7077"}}
    driver = {DRIVER: [0.1] * 3, DRIVER_JVM: [0.2] * 3}  # no Python workers: they ran on the cluster's machines
    write(tmp_path / "0", [8.0] * 3, num_images=64, cluster="remote", config=config, process_cpu_s=driver)
    html = build([tmp_path], tmp_path)[1].read_text()
    assert summary_cells(html)[0]["CPU core-ms / image"] == "4.7 (driver only)"  # 0.3 core-s / 64 images


def test_report_is_self_contained(html: str) -> None:
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", html, re.IGNORECASE)
    assert not re.search(r"<script[^>]+src|<link[^>]+stylesheet|@import|url\(", html, re.IGNORECASE)
    images = re.findall(r'<img src="([^"]*)"', html)
    assert len(images) >= 7 and all(uri.startswith("data:image/png;base64,") for uri in images)


def test_report_has_every_section(html: str) -> None:
    headings = re.findall(r"<h2>(.*?)</h2>", html)
    assert headings == list(SECTIONS)


def test_report_warns_of_random_weights_and_emulated_gpus(html: str) -> None:
    banner = html.split('<div class="banner"', 1)[1].split("</div>", 1)[0]
    assert "Random weights in 5 of 6 jobs" in banner and "accuracy is meaningless" in banner
    assert "Emulated GPUs in 1 of 6 jobs" in banner and "model ran on the CPU" in banner


def test_no_banner_without_random_weights_or_emulated_gpus(tmp_path: Path) -> None:
    copy_job(SWEEP / "0", tmp_path / "run", weights="file", gpus="none")
    _, html_path = build([tmp_path], tmp_path)
    assert 'class="banner"' not in html_path.read_text()


def test_bad_images_are_charted_only_when_a_run_had_some(html: str, tmp_path: Path) -> None:
    assert 'alt="bad images per run"' in html  # the fixture's stage_level run had 2
    copy_job(SWEEP / "0", tmp_path / "run")  # 0 bad images
    _, html_path = build([tmp_path], tmp_path)
    text = html_path.read_text()
    assert 'alt="bad images per run"' not in text
    assert "every one of the 1 runs that counted its images decoded them all" in text


def test_report_shows_failed_reason_missing_job_and_price_sources(html: str) -> None:
    assert "ClusterError: the standalone worker exited with status 1" in html
    assert "no result.json: the job has not finished" in html
    assert "AWS EC2 on-demand price list, as quoted for the original study" in html
    assert "assumed: AWS r6a.large on-demand, the nearest shape to this VM" in html


def test_report_has_provenance_and_spark_confs(html: str) -> None:
    provenance = html.split('<section id="provenance">', 1)[1]
    assert "d0707e811ecc8ebd8dd31abd1acb39eaeaabdfcc-dirty (5 runs)" in provenance
    assert "emulated: Spark scheduled tasks onto fake GPU addresses" in provenance
    assert provenance.count("<details>") == 5
    assert "spark.task.resource.gpu.amount" in provenance


def test_several_sweeps_report_together(tmp_path: Path) -> None:
    copy_job(SWEEP / "1", tmp_path / "second" / "0")
    csv_path, _ = build([SWEEP, tmp_path / "second"], tmp_path / "out")
    table = pd.read_csv(csv_path)
    assert len(table) == 7
    assert (table["label"] == "map_in_arrow · split · local · bs=64").sum() == 2


MICROBENCHMARK = Path(__file__).parent / "fixtures" / "microbenchmark.json"


def test_microbenchmark_decomposition_adds_up_to_the_faithful_case() -> None:
    parts = {row["part"].split(" (")[0]: row["seconds"] for row in decomposition(load_microbenchmark(MICROBENCHMARK))}
    # fixture: faithful 3.0 s, expected 1.0, sleep_tiny 1.6, tiny_no_sleep 0.4, image_round_trip 1.0
    assert parts["sleeps not packed onto the slots"] == pytest.approx(0.2)
    assert parts["image column through Arrow, both ways"] == pytest.approx(0.6)
    assert parts["unexplained"] == pytest.approx(0.8)
    assert sum(seconds for part, seconds in parts.items() if part != "faithful, measured") == pytest.approx(3.0)


def test_report_shows_the_microbenchmarks(tmp_path: Path) -> None:
    copy_job(SWEEP / "0", tmp_path / "run")
    _, html_path = build([tmp_path], tmp_path, microbenchmark=MICROBENCHMARK)
    section = html_path.read_text().split('<section id="microbenchmarks">', 1)[1].split("</section>", 1)[0]
    cases = section.split('id="microbenchmark-cases"', 1)[1].split("</table>", 1)[0]
    faithful = next(row for row in cases.split("<tr>") if "<td>faithful</td>" in row)
    assert re.sub(r"<[^>]+>", " ", faithful).split() == (
        "faithful faithful 2 2 256 1.000 3.000 [2.900–3.200] 3 2.000 3.0×".split()
    )
    assert cases.count("<tr>") == 10  # nine cases and the heading; a benchmark without a case is not ours
    assert 'unexplained (faithful − the parts above)</td><td class="num">0.800</td><td class="num">27%' in section
    assert 'a new Python worker for each of 2 tasks (worker_reuse_off − worker_reuse_on)</td><td class="num">2.000' in (
        section
    )
    styles = section.split('id="microbenchmark-styles"', 1)[1].split("</table>", 1)[0]
    rows = [re.sub(r"<[^>]+>", " ", row).split() for row in styles.split("<tr>")[2:]]
    # identity: 0.512 s / 256 images = 2 ms, all overhead; null model: 10 ms/image − 8 ms in process / 2 slots
    assert rows == [
        "map_in_arrow identity (raw images in and out) 2.00 500.0 2.00".split(),
        "map_in_pandas null model (JPEGs) 10.00 100.0 6.00".split(),
    ]
    assert '<img src="data:image/png;base64,' in section


def test_a_microbenchmark_file_without_our_cases_says_so(tmp_path: Path) -> None:
    copy_job(SWEEP / "0", tmp_path / "run")
    benchmark = tmp_path / "benchmark.json"
    benchmark.write_text('{"benchmarks": []}')
    _, html_path = build([tmp_path], tmp_path, microbenchmark=benchmark)
    section = html_path.read_text().split('<section id="microbenchmarks">', 1)[1]
    assert "The file holds no microbenchmark case" in section and str(benchmark) in section


# ------------------------------------------------------------------------------------------------------ CLI


def test_cli_rebuilds_an_identical_results_csv(tmp_path: Path) -> None:
    sweep = shutil.copytree(SWEEP, tmp_path / "sweep")
    csv_path, html_path = build([sweep], sweep)
    before = csv_path.read_bytes()
    csv_path.unlink()
    run = subprocess.run([sys.executable, "-m", "reports", str(sweep)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == [str(csv_path), str(html_path)]
    assert csv_path.read_bytes() == before


def test_cli_without_arguments_prints_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "usage: python -m reports DIR" in capsys.readouterr().err


@pytest.mark.parametrize("flag, value", [("--nodes", "2"), ("--device", "t4_fp16")])
def test_cli_refuses_a_projection_flag_without_project(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, value: str
) -> None:
    assert main([str(tmp_path), flag, value]) == 2
    assert f"error: {flag} applies only with --project instance=NAME" in capsys.readouterr().err


def test_cli_prints_the_lines_a_sweep_ends_with(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path / "0", 40.0)
    write(tmp_path / "1", 30.0, cluster="connect")
    write(tmp_path / "2", 48.0, python_udf_pipelined=True)
    assert main([str(tmp_path)]) == 0
    printed = capsys.readouterr().out.splitlines()[:-2]  # then results.csv and report.html
    assert "Connect / classic = 0.75x warm" in printed[0] and "pipelined vs map_in_pandas" in printed[1]
    SweepProgress().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}}))
    assert capsys.readouterr().out.splitlines()[1:-2] == [f"[sweep] {line}" for line in printed]


def test_cli_rejects_a_directory_that_does_not_exist(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path / "nope")]) == 2
    assert f"error: {tmp_path / 'nope'} does not exist" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------- browser


def test_report_renders_in_headless_chromium(report: tuple[Path, Path], tmp_path: Path) -> None:
    if not CHROMIUM.exists():
        pytest.skip("chromium not installed: .ci/run installs it with apt-get install chromium")
    screenshot = tmp_path / "report.png"
    run = subprocess.run(
        [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--enable-logging=stderr",
            "--v=0",
            f"--screenshot={screenshot}",
            "--window-size=1280,2000",
            report[1].resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    page_errors = [
        line
        for line in run.stderr.splitlines()
        if "ERROR:CONSOLE" in line or (":CONSOLE" in line and "Uncaught" in line)
    ]
    assert not page_errors
    image = Image.open(screenshot).convert("RGB")
    colours = image.getcolors(maxcolors=image.width * image.height)
    white = sum(count for count, colour in colours if colour == (255, 255, 255))
    assert len(colours) > 50
    assert 1 - white / (image.width * image.height) > 0.05


def test_runs_without_stage_times_get_the_reason_instead_of_an_empty_chart(tmp_path):
    (tmp_path / "0").mkdir()
    metrics = {"num_images": 32, "throughput_images_per_s": 100.0, "throughput_per_repeat": [100.0]}
    variant = {"engine": "torch", "model": "null_model", "batch_size": 16, "cluster": "local", "topology": "fused"}
    record = {"status": "ok", "variant": variant, "metrics": metrics}
    (tmp_path / "0" / "result.json").write_text(json.dumps(record | {"env": {"hostname": "h"}}))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib warned of a legend with nothing in it
        _, html = build([tmp_path], tmp_path)
    assert "No successful run recorded stage or job times." in html.read_text()
