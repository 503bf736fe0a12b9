"""The bottleneck model on hand-computed cases: every expected figure below is worked out in the comment above it."""

from __future__ import annotations

from dataclasses import replace

import pytest

from pipeline.projection.bottleneck import (
    CORES,
    GPU,
    GPU_SLOTS,
    JOB_OVERHEAD,
    NULL_DEVICE,
    PARTITIONS,
    Device,
    Rates,
    Shape,
    Workload,
    device_of,
    gpu_slots,
    input_scan,
    predict,
    shape_of,
)
from pipeline.spark.nodes import machine_cpus

FAST = Device("fast", images_per_s=1000.0, batch_size=10)
NODE = Shape(nodes=1, cores_per_node=8, gpus_per_node=2, task_gpu_amount=1.0, predict_gpu_amount=1.0)
WORK = Workload(num_images=800, batch_size=10, records_per_batch=10)


@pytest.mark.parametrize(
    ("gpus", "amount", "slots"), [(4, 1 / 12, 48), (4, 0.5, 8), (4, 1.0, 4), (4, 2.0, 2), (2, 0.25, 8), (1, 0.3, 3)]
)
def test_gpu_slots_follow_sparks_rule(gpus: int, amount: float, slots: int) -> None:
    assert gpu_slots(gpus, amount) == slots


def test_fused_is_capped_by_the_gpu_slots_while_cores_idle() -> None:
    # 2 tasks (one per GPU) of 400 images, each 0.01 s decode + 0.001 s device: 4.4 s; 8 cores mostly idle
    prediction = predict("fused", Rates(preprocess_s=0.01), FAST, NODE, WORK)
    assert prediction.seconds == pytest.approx(4.4)
    assert prediction.images_per_s == pytest.approx(800 / 4.4)
    assert prediction.bound == GPU_SLOTS
    assert prediction.stages[0].concurrent == 2
    assert prediction.utilization["cores"] == pytest.approx(8.0 / (8 * 4.4))
    assert prediction.utilization["gpus"] == pytest.approx(0.8 / (2 * 4.4))


def test_stage_level_decodes_on_every_core_then_predicts_on_the_gpus() -> None:
    # preprocess at 1/8 GPU: 8 tasks x 100 images x 0.01 s = 1.0 s; predict 2 tasks x 400 x 0.001 = 0.4 s;
    # the shuffle barrier makes them add: 1.4 s
    shape = Shape(1, 8, 2, task_gpu_amount=0.125, predict_gpu_amount=1.0)
    prediction = predict("stage_level", Rates(preprocess_s=0.01), FAST, shape, WORK)
    assert [stage.concurrent for stage in prediction.stages] == [8, 2]
    assert prediction.seconds == pytest.approx(1.4)
    assert prediction.bound == CORES
    assert prediction.utilization["cores"] == pytest.approx(8.0 / (8 * 1.4))


def test_split_without_a_profile_keeps_both_stages_on_the_gpu_slots() -> None:
    # both stages at 1 GPU a task: preprocess 2 tasks x 400 x 0.01 = 4.0 s, predict 2 x 400 x 0.001 = 0.4 s
    prediction = predict("split", Rates(preprocess_s=0.01), FAST, NODE, WORK)
    assert [stage.concurrent for stage in prediction.stages] == [2, 2]
    assert prediction.seconds == pytest.approx(4.4)
    assert prediction.bound == GPU_SLOTS


def test_tasks_sharing_a_gpu_share_its_rate() -> None:
    # 0.25 GPU a task: 8 tasks at once of 100 images at 0.02 s each = 2.0 s of slot time, but 800 images at
    # 100 img/s on 2 GPUs need 4.0 s: the GPUs bound
    slow = Device("slow", images_per_s=100.0, batch_size=10)
    shape = Shape(1, 8, 2, task_gpu_amount=0.25)
    prediction = predict("fused", Rates(preprocess_s=0.01), slow, shape, WORK)
    assert prediction.seconds == pytest.approx(4.0)
    assert prediction.bound == GPU
    assert prediction.utilization["gpus"] == pytest.approx(1.0)


def test_fixed_costs_and_waves() -> None:
    # 3 tasks of 20 images on 2 slots: 2 waves of (0.1 task + 2 batches x 0.01 + 20 x 0.01) = 0.64 s, plus the
    # job's 1.0 s, which is longer than the stage: the job overhead bounds
    rates = Rates(preprocess_s=0.01, job_s=1.0, task_s=0.1, batch_s=0.01)
    work = Workload(num_images=60, records_per_batch=10, partitions=3)
    prediction = predict("fused", rates, NULL_DEVICE, Shape(1, 2), work)
    assert prediction.seconds == pytest.approx(1.64)
    assert prediction.images_per_s == pytest.approx(60 / 1.64)
    assert prediction.bound == JOB_OVERHEAD
    assert prediction.utilization["gpus"] == 0.0


def test_more_slots_than_cores_are_bound_by_the_cores() -> None:
    # 8 slots on 2 physical cores: 800 x 0.01 core-s over 2 cores = 4.0 s, not the 1.0 s the slots suggest
    prediction = predict("fused", Rates(preprocess_s=0.01), NULL_DEVICE, Shape(1, 8, cpus_per_node=2), WORK)
    assert prediction.seconds == pytest.approx(4.0)
    assert prediction.bound == CORES


def test_two_stage_pays_the_intermediate_and_a_second_job() -> None:
    # job 1 on a 16-core CPU cluster: 16 tasks x 100 images x (0.016 + 0.01 write) = 2.6 s of its 16 cores; job 2
    # reads the 16 files on 1 GPU slot, 16 waves of a task of 10 batches, its JVM reading 1.0 s (100 x 0.01) beside
    # its Python worker's 2.0 s on the device: 3.0 / 10 + 9 / 10 x 2.0 = 2.1 s a task, 33.6 s; 2 jobs x 0.3 s: 36.8 s
    rates = Rates(preprocess_s=0.016, job_s=0.3, write_s_per_byte=1e-7, read_s_per_byte=1e-7)
    shape = Shape(1, 4, 1, task_gpu_amount=1.0, preprocess_nodes=1, preprocess_cores_per_node=16)
    work = Workload(num_images=1600, batch_size=10, records_per_batch=10, crop_bytes_per_image=1e5)
    device = Device("d", images_per_s=50.0, batch_size=10)
    prediction = predict("two_stage", rates, device, shape, work)
    assert [stage.seconds for stage in prediction.stages] == pytest.approx([2.6, 33.6])
    assert prediction.seconds == pytest.approx(36.8)
    assert prediction.bound == GPU
    assert prediction.utilization["preprocess cluster cores"] == pytest.approx(1600 * 0.026 / (16 * 36.8))
    assert prediction.utilization["gpus"] == pytest.approx(32 / 36.8)


def test_a_tasks_jvm_side_runs_beside_its_python_worker_between_arrow_batches_where_cores_are_free() -> None:
    # fused, 1 task of 100 images in 10 Arrow batches on 4 cores: the JVM moves each batch in (0.01 an image,
    # 1.0 s a task) while the worker decodes the last (0.02, 2.0 s): 3.0 / 10 + 9 / 10 x 2.0 = 2.1 s, not 3.0
    rates = Rates(preprocess_s=0.02, scan_s_per_image=0.01)
    work = Workload(100, batch_size=10, records_per_batch=10, images_per_file=100, row_group_size=100)
    alone = predict("fused", rates, NULL_DEVICE, Shape(1, 4), work)
    assert alone.seconds == pytest.approx(2.1)
    # one batch a task overlaps nothing; on 1 core the two sides share it: 100 x 0.03 = 3.0 s either way
    one_batch = predict("fused", rates, NULL_DEVICE, Shape(1, 4), replace(work, records_per_batch=100))
    assert one_batch.seconds == pytest.approx(3.0)
    assert predict("fused", rates, NULL_DEVICE, Shape(1, 1), work).seconds == pytest.approx(3.0)


def test_latency_is_paid_per_model_call() -> None:
    # Arrow batches of 10 rows, model batch 4: calls of 4, 4, 2 = 3 x 0.05 + 10/100 = 0.25 s per batch; 1 task
    # of 10 batches on 1 GPU: 2.5 s
    device = Device("lat", images_per_s=100.0, batch_size=4, latency_s=0.05)
    work = Workload(num_images=100, batch_size=4, records_per_batch=10)
    prediction = predict("fused", Rates(preprocess_s=0.0), device, Shape(1, 1, 1, 1.0), work)
    assert prediction.seconds == pytest.approx(2.5)
    assert prediction.bound == GPU


def test_the_model_rebuilt_per_batch_is_paid_per_arrow_batch() -> None:
    # 100 images in batches of 10 on 1 slot: 10 builds x 0.5 s + 100 x 0.01 s = 6.0 s
    rates = Rates(preprocess_s=0.01, model_build_s=0.5)
    work = Workload(num_images=100, records_per_batch=10, rebuild_model_per_batch=True)
    assert predict("fused", rates, NULL_DEVICE, Shape(1, 1), work).seconds == pytest.approx(6.0)
    assert predict("fused", rates, NULL_DEVICE, Shape(1, 1), Workload(100, records_per_batch=10)).seconds == 1.0


def test_a_scan_cost_per_image_is_paid_by_the_first_stage_only() -> None:
    # the original's int16 list column: 0.002 s a core to scan an image; 100 images on 1 core: 0.4 s + 0.2 s
    scanned = Rates(preprocess_s=0.004, scan_s_per_image=0.002)
    assert predict("fused", scanned, NULL_DEVICE, Shape(1, 1), Workload(100)).seconds == pytest.approx(0.6)
    split = predict("split", scanned, NULL_DEVICE, Shape(1, 1), Workload(100))
    unscanned = predict("split", replace(scanned, scan_s_per_image=0.0), NULL_DEVICE, Shape(1, 1), Workload(100))
    preprocess, predicted = split.stages
    assert preprocess.cpu_s - unscanned.stages[0].cpu_s == pytest.approx(0.2)
    assert predicted.cpu_s == pytest.approx(unscanned.stages[1].cpu_s)


def test_crops_move_at_their_own_rate_when_one_is_given() -> None:
    # split on 1 core, 100 images, 1,000-byte crops: out of preprocess and into predict, 1e-6 s a byte each way:
    # 0.001 s an image each stage, where the input's rate (1e-7) would give 0.0001
    rates = Rates(preprocess_s=0.0, transfer_s_per_byte=1e-7, crop_transfer_s_per_byte=1e-6)
    work = Workload(100, partitions=1, input_bytes_per_image=0.0, crop_bytes_per_image=1000.0)
    preprocess, predicted = predict("split", rates, NULL_DEVICE, Shape(1, 1), work).stages
    assert (preprocess.cpu_s, predicted.cpu_s) == (pytest.approx(0.1), pytest.approx(0.1))
    same = predict("split", replace(rates, crop_transfer_s_per_byte=0.0), NULL_DEVICE, Shape(1, 1), work).stages
    assert same[1].cpu_s == pytest.approx(0.01)


def test_host_cost_per_image_is_cpu_work() -> None:
    # 0.004 s decode + 0.001 s host copy per image on 1 core, 100 images, no device time to speak of: 0.5 s
    device = Device("host", images_per_s=1e12, batch_size=10, host_s_per_image=0.001)
    prediction = predict("fused", Rates(preprocess_s=0.004), device, Shape(1, 1, 1, 1.0), Workload(100))
    assert prediction.seconds == pytest.approx(0.5)


def test_a_model_server_decodes_on_every_slot_and_pays_its_requests() -> None:
    # 1/4 GPU a task: 8 tasks at once of 100 images; each image 0.01 s decode + 0.001 s of the server's CPU and
    # 0.001 s device; 10 requests a task of 0.002 s round trip: 1.1 + 0.1 + 0.02 = 1.22 s, against fused's 4.4 s
    # on 2 GPU slots (test_fused_is_capped_by_the_gpu_slots_while_cores_idle); 8.8 core-s over 8 cores: 1.1 s
    rates = Rates(preprocess_s=0.01, request_s=0.002, serve_cpu_s_per_image=0.001)
    shape = Shape(1, 8, 2, task_gpu_amount=0.25)
    prediction = predict("model_server", rates, FAST, shape, WORK)
    assert [(stage.name, stage.concurrent) for stage in prediction.stages] == [("served", 8)]
    assert prediction.seconds == pytest.approx(1.22)
    assert prediction.bound == CORES
    assert prediction.utilization["cores"] == pytest.approx(8.8 / (8 * 1.22))
    assert prediction.utilization["gpus"] == pytest.approx(0.8 / (2 * 1.22))


def test_every_topology_and_bad_inputs() -> None:
    topologies = {"fused", "split", "two_stage", "stage_level", "model_server"}
    for topology in topologies:
        assert predict(topology, Rates(preprocess_s=0.01), FAST, NODE, WORK).topology == topology
    with pytest.raises(ValueError, match="topology 'nope'"):
        predict("nope", Rates(preprocess_s=0.01), FAST, NODE, WORK)
    with pytest.raises(ValueError, match="needs GPUs"):
        predict("fused", Rates(preprocess_s=0.01), FAST, Shape(1, 8), WORK)


def test_shape_of_a_recorded_config() -> None:
    config = {
        "cluster": {"mode": "local_cluster", "workers": 2, "worker_cores": 4, "task_cpus": 1},
        "gpu": {"emulate": 2, "task_amount": 0.5, "predict_task_amount": 1.0},
        "spark": {"max_records_per_batch": 64, "partitions": None},
        "topology": {"kind": "stage_level", "predict_partitions": None},
        "dataset": {"num_images": 256, "format": "raw"},
        "model": {"batch_size": 16},
        "udf": {"style": "map_in_pandas"},
    }
    topology, shape, workload = shape_of(config, cpu_count=2)
    assert topology == "stage_level"
    assert shape == Shape(2, 4, 2, 0.5, 1.0, cpus_per_node=1.0)
    assert (workload.num_images, workload.batch_size, workload.records_per_batch) == (256, 16, 64)
    assert workload.input_bytes_per_image == 256 * 256 * 3
    local = {"cluster": {"mode": "local", "cores": None}, "gpu": {"task_amount": 0.0}, "topology": {"kind": "fused"}}
    assert shape_of(local, cpu_count=2)[1] == Shape(1, 2, 0, 0.0, None, cpus_per_node=2.0)


def test_a_remote_cluster_s_nodes_have_the_cores_of_the_machines_under_them() -> None:
    """Three namespace nodes on one 2-core machine share its cores; three machines of 4 cores have 4 each; with no
    evidence of the machines a node has the cores it announces (the driver's machine says nothing of them)."""
    config = {
        "cluster": {"mode": "remote", "workers": 3, "worker_cores": 1, "task_cpus": 1},
        "gpu": {"emulate": 1},
        "topology": {"kind": "fused"},
        "dataset": {"num_images": 96},
    }
    one_machine = {f"node-{i}": {"machine": "boot-a", "cpu_count": 2} for i in range(3)}
    three_machines = {f"node-{i}": {"machine": f"boot-{i}", "cpu_count": 4} for i in range(3)}
    assert shape_of(config, 2, node_cpus=machine_cpus(one_machine))[1].cpus_per_node == pytest.approx(2 / 3)
    assert shape_of(config, 2, node_cpus=machine_cpus(three_machines))[1].cpus_per_node == 4.0
    assert shape_of(config, 2)[1].cpus_per_node is None


def _fused_seconds(batch: int, prefetch: bool) -> float:
    """One task of 100 images on one core and one device: 0.01 s decode and 0.008 s device an image."""
    device = Device("d", images_per_s=125.0, batch_size=batch)
    workload = Workload(100, batch_size=batch, records_per_batch=batch, prefetch=prefetch)
    return predict("fused", Rates(preprocess_s=0.01), device, Shape(1, 1, 1, 1.0), workload).seconds


def test_prefetch_overlaps_decoding_with_the_device_but_for_the_first_batch_and_the_last_call() -> None:
    # 10 model calls: 0.1 s decode and 0.08 s device a batch; serial 1.8 s, overlapped 0.1 (the first batch's
    # decode) + 9 x 0.1 (each later step's larger part) + 0.08 (the last call) = 1.08 s
    assert (_fused_seconds(10, prefetch=False), _fused_seconds(10, prefetch=True)) == pytest.approx((1.8, 1.08))


def test_prefetch_overlaps_nothing_in_a_task_of_one_model_call() -> None:
    serial = _fused_seconds(100, prefetch=False)
    assert _fused_seconds(100, prefetch=True) == pytest.approx(serial) == pytest.approx(1.8)


def test_too_few_tasks_bound_a_cpu_stage() -> None:
    # 2 partitions on 8 cores: 2 tasks x 400 images x 0.01 s = 4.0 s while 6 cores idle
    prediction = predict("fused", Rates(preprocess_s=0.01), NULL_DEVICE, Shape(1, 8), Workload(800, partitions=2))
    assert prediction.seconds == pytest.approx(4.0)
    assert prediction.bound == PARTITIONS


def test_device_of_a_recorded_config() -> None:
    profile = {
        "name": "t4_fp16",
        "images_per_s": 3000.0,
        "batch_size": 256,
        "latency_s": 0.001,
        "host_s_per_image": 3e-5,
    }
    assert device_of({"model": {"name": "accelerator"}, "device": profile}) == Device(
        "t4_fp16", 3000.0, 256, 0.001, 3e-5
    )
    assert device_of({"model": {"name": "null_model"}, "device": None}) is NULL_DEVICE
    with pytest.raises(ValueError, match="no device profile"):
        device_of({"model": {"name": "resnet50"}, "device": None})


def test_a_preprocess_cluster_of_faster_cores() -> None:
    # job 1 on 2 cores twice as fast: 100 images x 0.01 s / 2 over 2 slots = 0.25 s; job 2 on 1 GPU: 100 x 0.001
    shape = Shape(1, 1, 1, 1.0, preprocess_nodes=1, preprocess_cores_per_node=2, preprocess_cpu_speed=2.0)
    prediction = predict("two_stage", Rates(preprocess_s=0.01), FAST, shape, Workload(100, partitions=2))
    assert [stage.seconds for stage in prediction.stages] == pytest.approx([0.25, 0.1])


def test_the_scan_makes_a_task_per_cores_share_of_the_bytes_not_per_gpu_slot() -> None:
    # 128 images of 120 KB (15.4 MB) on 4 cores: the harness's split is 3.84 MB, so 4 tasks, one a row group
    assert input_scan(Workload(128, row_group_size=32), parallelism=4) == (4, 4)
    # row groups of 64: still 4 splits, but 2 hold no row group's midpoint and read nothing
    assert input_scan(Workload(128, row_group_size=64), parallelism=4) == (4, 2)
    # 10,000 images in files of 1,000 (120 MB) on 8 cores: splits of at most 128 MiB, one a file
    assert input_scan(Workload(10_000), parallelism=8) == (10, 10)


def test_two_stage_job_2_runs_a_task_per_file_job_1_wrote() -> None:
    # 128 images in row groups of 32 on 4 cores and 4 GPUs: job 1 has 4 tasks, each writes a file of crops (4.8 MB,
    # larger than the JPEGs' 3.84 MB split); job 2 reads each file whole: 4 tasks of 0.3 s at once, none empty
    rates = Rates(preprocess_s=0.01, task_s=0.3)
    prediction = predict("two_stage", rates, NULL_DEVICE, Shape(1, 4, 4, 1.0), Workload(128, row_group_size=32))
    job_2 = prediction.stages[1]
    assert (job_2.tasks, job_2.seconds) == (4, pytest.approx(0.3))


def test_a_fused_stage_capped_by_its_gpu_slots_runs_the_scan_tasks_in_waves() -> None:
    # 4 cores, 2 GPUs at 1 a task: 4 scan tasks of 32 images, 2 at once; a task: 0.3 s + 32 x 0.005 s + 32 / 20 s
    # = 2.06 s; two waves 4.12 s (the device alone would take 128 / 40 = 3.2 s)
    rates = Rates(preprocess_s=0.005, task_s=0.3)
    device = Device("d", images_per_s=20.0, batch_size=16)
    prediction = predict("fused", rates, device, Shape(1, 4, 2, 1.0), Workload(128, 16, row_group_size=32))
    (stage,) = prediction.stages
    assert (stage.tasks, stage.concurrent) == (4, 2)
    assert prediction.seconds == pytest.approx(4.12)


def test_shape_of_takes_the_gpu_amounts_the_run_resolved() -> None:
    # gpu.task_amount=0 means "as the topology needs": the run resolved 1 GPU a task, so 2 GPUs allow 2 tasks
    config = {
        "cluster": {"mode": "local_cluster", "workers": 1, "worker_cores": 4, "task_cpus": 1},
        "gpu": {"emulate": 2, "task_amount": 0.0, "predict_task_amount": 1.0},
        "topology": {"kind": "fused"},
        "dataset": {"num_images": 128, "row_group_size": 32},
    }
    _, shape, workload = shape_of(config, cpu_count=2, gpu_plan={"task_amount": 1.0, "predict_task_amount": 1.0})
    assert shape.task_gpu_amount == 1.0
    assert workload.row_group_size == 32
    assert shape_of(config, cpu_count=2)[1].task_gpu_amount == 0.0


def test_a_tasks_own_cost_is_cpu_work_when_slots_outnumber_cores() -> None:
    # 4 slots on 2 cores, 4 tasks of 32 images: a task's slot time is 0.25 + 32 x 0.005 = 0.41 s, but the
    # 4 tasks' CPU work, their own cost included, is 4 x 0.41 = 1.64 core-s over 2 cores: 0.82 s
    rates = Rates(preprocess_s=0.005, task_s=0.25)
    shape = Shape(1, 4, cpus_per_node=2.0)
    prediction = predict("fused", rates, NULL_DEVICE, shape, Workload(128, row_group_size=32))
    assert prediction.seconds == pytest.approx(0.82)
    assert prediction.bound == CORES


def test_the_jvms_cpu_around_a_stage_is_cpu_work_and_no_tasks_time() -> None:
    # the case above plus 0.4 core-s of the JVMs' work while its stage runs: (1.64 + 0.4) / 2 = 1.02 s
    rates = Rates(preprocess_s=0.005, task_s=0.25, job_cpu_s=0.4)
    shape = Shape(1, 4, cpus_per_node=2.0)
    assert predict("fused", rates, NULL_DEVICE, shape, Workload(128, row_group_size=32)).seconds == pytest.approx(1.02)
    # on 8 cores the slots bound it (0.41 s a task, one wave): the JVMs' 0.4 core-s fit beside the tasks
    wide = Shape(1, 4, cpus_per_node=8.0)
    assert predict("fused", rates, NULL_DEVICE, wide, Workload(128, row_group_size=32)).seconds == pytest.approx(0.41)


def test_the_jvms_cpu_is_charged_once_a_job_however_many_stages_it_has() -> None:
    # no per-task or per-image cost: every core-second of the CPU term is the JVMs' work of the jobs
    rates = Rates(preprocess_s=0.0, job_cpu_s=0.4)
    shape = Shape(1, 2, cpus_per_node=2.0)
    workload = Workload(128, row_group_size=32)
    one_job = {
        topology: sum(stage.cpu_s for stage in predict(topology, rates, NULL_DEVICE, shape, workload).stages)
        for topology in ("fused", "split", "two_stage")
    }
    assert one_job == pytest.approx({"fused": 0.4, "split": 0.4, "two_stage": 0.8})


def test_a_repartition_is_a_stage_of_jvm_tasks_ahead_of_the_first_step() -> None:
    # 128 images in row groups of 32 on 4 cores: the scan's 4 tasks, one wave of 0.2 s each plus its 32 images'
    # shuffle write (32 x 120 KB x 1e-9 s/B / 2 = 1.92 ms); then 2 fused tasks of 64 images each reading the shuffle
    # (the same 1.92 ms a 32 images) and decoding (64 x 0.01 s): 0.64 + 0.00384 s, as 2 tasks on 4 cores
    rates = Rates(preprocess_s=0.01, shuffle_s_per_byte=1e-9, repartition_task_s=0.2)
    work = Workload(128, row_group_size=32, partitions=2, repartition=True)
    prediction = predict("fused", rates, NULL_DEVICE, Shape(1, 4), work)
    assert [(stage.name, stage.tasks) for stage in prediction.stages] == [("repartition", 4), ("fused", 2)]
    assert [stage.seconds for stage in prediction.stages] == pytest.approx([0.20192, 0.64384])


def test_partitions_the_input_lies_in_cost_no_repartition() -> None:
    # the same 2 tasks as the data's own files (a projection's input, not the tool's spark.partitions)
    rates = Rates(preprocess_s=0.01, shuffle_s_per_byte=1e-9, repartition_task_s=0.2)
    prediction = predict("fused", rates, NULL_DEVICE, Shape(1, 4), Workload(128, row_group_size=32, partitions=2))
    assert [stage.name for stage in prediction.stages] == ["fused"]
    assert prediction.seconds == pytest.approx(0.64)


def test_a_run_with_spark_partitions_repartitioned_its_input() -> None:
    config = {"cluster": {"mode": "local", "cores": 2}, "spark": {"partitions": 4}}
    assert shape_of(config)[2].repartition and not shape_of({**config, "spark": {}})[2].repartition
