"""A bottleneck model of a run: its throughput predicted from measured rates and a cluster shape.

Why: the question the tool answers (how to run ResNet50 inference on a GPU cluster) is decided by the balance
of CPU decoding, GPU speed and Spark's concurrency rules, and most sessions have no GPU. This model turns
rates measured here (decode + preprocess per core, Spark's fixed costs) and a device profile into each
topology's throughput on any shape, so the check sweep can compare it with runs under a simulated device and
the reports can project to real instances. Pure functions over numbers: no Spark, torch or file I/O
(`pipeline.projection.rates` reads the rates from disk; the split size is the harness's own rule, the pure
`pipeline.spark.session.split_bytes`).

Spark's concurrency rules, as modelled:

- a task slot is a core (task.cpus=1); with GPU scheduling a node runs at most `gpu_slots` tasks of a
  profile at once: `gpus x floor(1 / amount)` for a fractional amount, `floor(gpus / amount)` for a whole one;
- a Parquet scan has as many tasks as Spark makes splits (`scan_tasks`) under the split size the harness sets
  (the input's bytes over every core, not over the GPU slots), so a fused stage capped by its GPU slots runs
  its tasks in waves; a split holding no row group's midpoint is an empty task that still costs a task;
- `fused`: one stage; min(GPU slots, cores) tasks at once, each decoding then predicting its images serially;
- `split`: preprocess -> repartition -> predict. Both stages run under the application's task GPU amount (no
  profile), so without `stage_level` preprocessing is limited to the GPU slots too, as on the original's
  standard cluster; in `local[N]` (no GPU scheduling) it runs on every core;
- `stage_level`: like split, the preprocess stage at the application's (fractional) amount, the predict stage
  under its own profile (`predict_gpu_amount` GPUs a task);
- `two_stage`: job 1 preprocesses and writes the crops (on a CPU cluster of its own when given), a file per
  task; job 2 reads them, a task per file, and predicts; each job pays Spark's fixed cost;
- `model_server`: one stage like fused, but on every slot the application's (fractional) GPU amount allows
  (the harness sets it so that every core decodes); each model call is a request to the node's server, which
  waits for it: the server's own CPU per image (`serve_cpu_s_per_image`: receiving the crops, handing them to an
  instance, answering) is CPU work on the node's cores and task time, the request's round trip beyond the device,
  the queue and that CPU (`request_s`: the client's side, gRPC both ways) is task time, and the device calls are
  the same as in-process, over the node's GPUs (one server instance each).

A repartition (`Workload.repartition`: the tool's `spark.partitions`, `images.repartition(N)` before the first
step) is a stage of its own first: JVM tasks, one per split of the scan, that read their split and write its rows
to the shuffle, no Python (`repartition_task_s` a task, measured by the calibrate run with partitions set, and the
input bytes' shuffle write); the first step's N tasks then read the shuffle instead of the Parquet scan.

Stages separated by a shuffle do not overlap: Spark's scheduler starts a reduce stage only when every map task
of the stage before it has finished, so a run's time is the sum of its stages' times (plus each job's fixed
cost), not the max of stage rates. A stage's time is the largest of: its waves of tasks on the slots it may
use (each task's serial work: per-task cost, per Arrow batch cost, per image CPU and device time), the CPU work
over the physical cores (slots may outnumber cores, as `local-cluster` does here; the per-task cost counts, as
a task's scan, Arrow and Python handshake run on those cores), and the device work over the GPUs (several
tasks sharing a GPU share its rate). Whichever is largest names the stage's bound.

Inside a task, Spark's runner hands the Python worker its next Arrow batch from a JVM thread while the worker runs
the last, so a task's JVM side (the scan, Arrow in and out, the shuffle, Parquet writes and reads) and its Python
side (decoding, the model) overlap between batches, as prefetch overlaps decoding and the device (`_overlapped`);
where they share a core the CPU term above bounds them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.data.formats import RAW_BYTES
from pipeline.spark.session import split_bytes

TOPOLOGIES = ("fused", "split", "two_stage", "stage_level", "model_server")
# topologies whose decoding tasks take a GPU share of gpus / cores, so that every core decodes
DECOUPLED = ("stage_level", "model_server")

# what bounds a stage or a run (Prediction.bound)
GPU = "gpu"
GPU_SLOTS = "gpu task slots"  # concurrency capped by the GPU count while cores idle (fused's problem)
CORES = "preprocess cores"
TASK_OVERHEAD = "spark per-task overhead"
JOB_OVERHEAD = "spark per-job overhead"
TASK_SLOTS = "task slots"  # fewer task slots than physical cores, no GPU involved
PARTITIONS = "too few tasks"  # fewer tasks than cores: partitions, not slots, cap the concurrency

CROP_BYTES = 224 * 224 * 3  # a preprocessed uint8 crop, what split's shuffle and two_stage's files carry
JPEG_BYTES = 120_000.0  # the generator's mean JPEG (110-130 KB, docs/running.md "Data")


def image_bytes(image_format: str | None) -> float:
    """Bytes a task reads per input image of the format (dataset.format; JPEG when not recorded)."""
    return float(RAW_BYTES) if image_format == "raw" else JPEG_BYTES


@dataclass(frozen=True)
class Rates:
    """Measured costs. `*_s` figures are seconds of one core (or one task slot) unless said.

    preprocess_s: decode + preprocess of one image on one core; job_s: Spark's fixed cost of one job (an
    action), wall seconds; task_s: per task; batch_s: per Arrow batch into Python and back; transfer_s_per_byte:
    moving a column through Arrow to Python, one way; shuffle_s_per_byte: writing and reading a repartition's
    shuffle; write_s_per_byte / read_s_per_byte: two_stage's intermediate Parquet; model_build_s: building the
    model once (paid per Arrow batch by the original's scalar UDF); scan_s_per_image: the first stage's Parquet
    scan of an input image beyond what task_s holds (0 for a binary column, whose scan task_s measured; the
    original's int16 list column, decoded value by value, costs per image); crop_transfer_s_per_byte: moving a
    preprocessed crop through Arrow, per byte, where a crop's column differs from the input's (the original's
    float32 list crops; 0: at transfer_s_per_byte). job_cpu_s: core-seconds a job costs the nodes beyond
    its tasks' own work and its wall time outside its stages (the driver's and executors' JVMs scheduling, tracking
    and logging the tasks while they run), counted in the CPU term only, shared evenly by the job's stages: it is
    measured on a one-stage job, and split's two stages in one job spend about what fused's one does (measured:
    each run's CPU of every process a pass, `sweep=bottleneck_check`, docs/measurements.md). repartition_task_s:
    wall seconds of one task of a repartition's map stage (scanning its split and handing its rows to the shuffle,
    no Python) beyond its bytes' shuffle write: its launch, the scan's setup and the stage's scheduling, per wave.
    `sources` says where each figure came from.
    """

    preprocess_s: float
    job_s: float = 0.0
    task_s: float = 0.0
    batch_s: float = 0.0
    transfer_s_per_byte: float = 0.0
    shuffle_s_per_byte: float = 0.0
    write_s_per_byte: float = 0.0
    read_s_per_byte: float = 0.0
    model_build_s: float = 0.0
    scan_s_per_image: float = 0.0
    crop_transfer_s_per_byte: float = 0.0
    request_s: float = 0.0
    serve_cpu_s_per_image: float = 0.0
    job_cpu_s: float = 0.0
    repartition_task_s: float = 0.0
    sources: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Device:
    """A device profile: one model call of n images holds the device for latency_s + n / images_per_s and
    costs host_s_per_image of host CPU per image (the copy to pinned memory). `images_per_s=inf`: no model."""

    name: str
    images_per_s: float
    batch_size: int
    latency_s: float = 0.0
    host_s_per_image: float = 0.0

    def call_s(self, images: int) -> float:
        """Device time of one model call of `images` images."""
        return self.latency_s + images / self.images_per_s if images else 0.0


NULL_DEVICE = Device("null_model", math.inf, 1)


@dataclass(frozen=True)
class Shape:
    """A cluster shape. cores_per_node: task slots at task.cpus=1; cpus_per_node: physical cores doing the CPU
    work (None: as many as slots); task_gpu_amount: the application's GPUs per task (0: no GPU scheduling);
    predict_gpu_amount: stage_level's predict profile (None: task_gpu_amount). preprocess_nodes /
    preprocess_cores_per_node: two_stage's CPU cluster (None: job 1 runs on this cluster), whose cores run
    `preprocess_cpu_speed` times as fast as this cluster's (another instance type)."""

    nodes: int
    cores_per_node: int
    gpus_per_node: int = 0
    task_gpu_amount: float = 0.0
    predict_gpu_amount: float | None = None
    cpus_per_node: float | None = None
    preprocess_nodes: int | None = None
    preprocess_cores_per_node: int | None = None
    preprocess_cpus_per_node: float | None = None
    preprocess_cpu_speed: float = 1.0

    @property
    def cpus(self) -> float:
        """The physical cores of every node together."""
        return self.nodes * (self.cpus_per_node or self.cores_per_node)


@dataclass(frozen=True)
class Workload:
    """What a run pushes through: images, the model batch, Arrow rows per batch, input tasks (None: as Spark's
    Parquet scan splits the data, `input_scan`), predict tasks (None: the predict slots), bytes a task reads per
    image, and the original's confound (the model rebuilt for every Arrow batch of the predict step). `prefetch`:
    a task decodes its next model batch while the device runs the last (the iterator UDF's `udf.prefetch`), so a
    fused task's per-image time tends to the larger of its CPU and device time, not their sum, as its model calls
    grow (`_overlapped`: its first batch's preparing and last call are not overlapped). `row_group_size` and
    `images_per_file`: the data's Parquet layout, which decides the scan's tasks (None: one row group a split).
    `repartition`: the `partitions` input tasks come from repartitioning what the scan read (the tool's
    `spark.partitions`: a map stage ahead, `_repartition`), not from the input's files as they lie."""

    num_images: int
    batch_size: int = 32
    records_per_batch: int = 128
    partitions: int | None = None
    predict_partitions: int | None = None
    input_bytes_per_image: float = JPEG_BYTES
    crop_bytes_per_image: float = float(CROP_BYTES)
    rebuild_model_per_batch: bool = False
    prefetch: bool = False
    row_group_size: int | None = None
    images_per_file: int = 1000
    repartition: bool = False


@dataclass(frozen=True)
class Stage:
    """One stage as predicted: tasks, how many at once, seconds, what bounds it, and its work totals."""

    name: str
    tasks: int
    concurrent: int
    seconds: float
    bound: str
    cpu_s: float  # core-seconds of CPU work
    device_s: float  # device-seconds of model work
    slots: int  # the slots it may use
    cpus: float  # the physical cores it runs on


@dataclass(frozen=True)
class Prediction:
    """A topology's predicted throughput, its bound and how busy each resource is over the run (0..1)."""

    topology: str
    images_per_s: float
    seconds: float
    bound: str
    utilization: dict[str, float]
    stages: tuple[Stage, ...]


OPEN_COST_BYTES = 4 * 1024**2  # spark.sql.files.openCostInBytes' default


def scan_tasks(
    files: int, file_bytes: float, row_groups_per_file: int, parallelism: int, max_partition_bytes: float
) -> tuple[int, int]:
    """(tasks, tasks that read rows) of a Parquet scan over `files` files of `file_bytes`, as Spark splits them:
    splits of min(maxPartitionBytes, max(openCostInBytes, bytes per core with an open cost per file)); a split
    reads the row groups whose midpoint it holds, so a file cut into more splits than it has row groups leaves
    splits empty: tasks that cost a task and read nothing."""
    total = files * (file_bytes + OPEN_COST_BYTES)
    split = min(max_partition_bytes, max(OPEN_COST_BYTES, total / max(1, parallelism)))
    per_file = max(1, math.ceil(file_bytes / split))
    return files * per_file, files * min(per_file, max(1, row_groups_per_file))


def input_scan(workload: Workload, parallelism: int) -> tuple[int, int]:
    """The first stage's scan of the data set (`scan_tasks`), under the split size the harness sets
    (`pipeline.spark.session.split_bytes`: the input's bytes over the task slots)."""
    n = workload.num_images
    files = max(1, math.ceil(n / workload.images_per_file))
    per_file = n / files
    groups = math.ceil(per_file / workload.row_group_size) if workload.row_group_size else math.ceil(per_file)
    file_bytes = per_file * workload.input_bytes_per_image
    split = split_bytes(math.ceil(n * workload.input_bytes_per_image), parallelism, math.ceil(file_bytes))
    return scan_tasks(files, file_bytes, groups, parallelism, split)


def _input_tasks(workload: Workload, parallelism: int) -> tuple[int, int]:
    """(tasks that read images, empty tasks) of the first stage: the scan's, or `partitions` when set."""
    if workload.partitions:
        return workload.partitions, 0
    scanned, reading = input_scan(workload, parallelism)
    return reading, scanned - reading


def gpu_slots(gpus: int, amount: float) -> int:
    """Tasks of one profile a node with `gpus` GPUs runs at once by GPU count (Spark's rule)."""
    if amount <= 0:
        raise ValueError("a GPU amount per task must be positive")
    if amount < 1:
        return gpus * math.floor(1 / amount + 1e-9)
    return math.floor(gpus / amount + 1e-9)


def _slots(cores: int, gpus: int, amount: float) -> int:
    """Task slots of a node: its cores, capped by its GPU slots when tasks ask for GPUs."""
    if amount and gpus:
        return min(cores, gpu_slots(gpus, amount))
    return cores


def _overlapped(cpu_s: float, device_s: float, calls: float) -> float:
    """A task's time when it prepares its next model batch while the device runs the last (prefetch): a pipeline
    of `calls` steps, each taking the larger of a batch's CPU and device time, plus the first batch's preparing
    and the last batch's device call, which nothing overlaps. A task of one model call overlaps nothing."""
    calls = max(1.0, calls)
    return (cpu_s + device_s) / calls + (calls - 1) / calls * max(cpu_s, device_s)


def _stage(
    name: str,
    images: int,
    tasks: int,
    slots: int,
    cpus: float,
    gpus: int,
    rates: Rates,
    records_per_batch: int,
    cpu_per_image: float,
    device: Device | None,
    batch_size: int,
    rebuild_model: bool,
    prefetch: bool = False,
    empty_tasks: int = 0,
    request_s: float = 0.0,
    jvm_per_image: float = 0.0,
    job_cpu_s: float = 0.0,
) -> Stage:
    """A stage's time by the rules in the module docstring (its waves, its CPU work, its device work);
    `empty_tasks` more tasks read nothing and cost a task each, in the waves they add; `job_cpu_s`: the part of
    its job's JVM work (`Rates.job_cpu_s`) the stage's CPU term carries; `request_s`: wall
    seconds each model call waits beyond its device time (a model server's round trip); `jvm_per_image`: the
    part of `cpu_per_image` the task's JVM does (scan, Arrow in and out, shuffle, Parquet), beside its Python
    worker."""
    if slots < 1:
        raise ValueError(f"stage {name}: no task slot (check cores and GPU amounts)")
    per_task = images / tasks
    rows = max(1, min(records_per_batch, math.ceil(per_task)))
    batches_per_task = math.ceil(per_task / rows)
    device_per_task = 0.0
    full, rest = divmod(rows, batch_size)
    if device is not None and math.isfinite(device.images_per_s):
        per_batch = full * device.call_s(batch_size) + device.call_s(rest)
        device_per_task = per_batch * per_task / rows
    calls_per_task = (full + (1 if rest else 0)) * per_task / rows
    build = rates.model_build_s if rebuild_model else 0.0
    overhead_per_task = rates.task_s + batches_per_task * (rates.batch_s + build) + calls_per_task * request_s
    cpu_per_task = per_task * cpu_per_image
    jvm_per_task = per_task * jvm_per_image
    python_per_task = cpu_per_task - jvm_per_task
    waves = math.ceil(tasks / slots)
    python_work = (
        _overlapped(python_per_task, device_per_task, calls_per_task) if prefetch else python_per_task + device_per_task
    )
    # Spark's runner writes the next Arrow batch to the Python worker from a JVM thread while the worker runs the
    # last one: the two sides overlap between batches (measured: of a float32 crop's 12.7 core-ms through Arrow,
    # 11.6 are the JVM's, tests.bench.original_costs); the cores they share bound it in the CPU term below
    work_per_task = _overlapped(jvm_per_task, python_work, batches_per_task)
    slot_seconds = waves * (overhead_per_task + work_per_task)
    slot_seconds += (math.ceil((tasks + empty_tasks) / slots) - waves) * rates.task_s
    # a task's own cost (its split's scan, Arrow, the Python worker's handshake) is CPU work on the node too, and
    # so is the JVMs' work around the tasks while the stage runs
    cpu_s = tasks * (cpu_per_task + batches_per_task * (rates.batch_s + build)) + (tasks + empty_tasks) * rates.task_s
    cpu_s += job_cpu_s
    device_s = tasks * device_per_task
    cpu_seconds = cpu_s / cpus
    device_seconds = device_s / gpus if device_s else 0.0
    seconds = max(slot_seconds, cpu_seconds, device_seconds)
    if device_s and device_seconds >= seconds:
        bound = GPU
    elif cpu_seconds >= seconds and cpu_seconds > 0:
        bound = CORES
    else:
        parts = {TASK_OVERHEAD: overhead_per_task, CORES: cpu_per_task, GPU: device_per_task}
        bound = max(parts, key=parts.__getitem__)
        if bound == CORES and min(tasks, slots) < cpus:
            bound = PARTITIONS if tasks < min(slots, cpus) else GPU_SLOTS if gpus and slots < cpus else TASK_SLOTS
    return Stage(name, tasks, min(tasks, slots), seconds, bound, cpu_s, device_s, slots, cpus)


def _repartition(
    workload: Workload, tasks: int, empty: int, slots: int, cpus: float, rates: Rates
) -> tuple[Stage, float]:
    """A repartition's map stage (module docstring) over the scan's `tasks` (and `empty` ones, which cost a task
    too), on the first step's `slots`; and the seconds per image the first step then spends reading the shuffle
    in place of the scan. A task's fixed cost is waited for, not computed: the CPU term holds the scan and the
    shuffle write only."""
    half_shuffle = rates.shuffle_s_per_byte * workload.input_bytes_per_image / 2
    write = workload.num_images / tasks * (rates.scan_s_per_image + half_shuffle)
    waves = math.ceil((tasks + empty) / slots)
    slot_seconds = waves * rates.repartition_task_s + math.ceil(tasks / slots) * write
    cpu_s = tasks * write
    seconds = max(slot_seconds, cpu_s / cpus)
    bound = CORES if cpu_s / cpus >= slot_seconds or write > rates.repartition_task_s else TASK_OVERHEAD
    stage = Stage("repartition", tasks + empty, min(tasks + empty, slots), seconds, bound, cpu_s, 0.0, slots, cpus)
    return stage, half_shuffle


def _ahead(workload: Workload, rates: Rates, parallelism: int, slots: int, cpus: float) -> tuple[list[Stage], float]:
    """The stages ahead of the first step (a repartition's, `_repartition`, when `partitions` is set; else none)
    and the seconds per image the first step spends reading its input: the shuffle's or the scan's."""
    if not (workload.partitions and workload.repartition):
        return [], rates.scan_s_per_image
    scanned, reading = input_scan(workload, parallelism)
    stage, read_s = _repartition(workload, reading, scanned - reading, slots, cpus, rates)
    return [stage], read_s


def predict(topology: str, rates: Rates, device: Device, shape: Shape, workload: Workload) -> Prediction:
    """The throughput `topology` reaches on `shape` for `workload`, by the rules in the module docstring."""
    if topology not in TOPOLOGIES:
        raise ValueError(f"topology {topology!r}: one of {', '.join(TOPOLOGIES)}")
    if device.images_per_s <= 0 or shape.nodes < 1 or shape.cores_per_node < 1 or workload.num_images < 1:
        raise ValueError("a device rate, nodes, cores and images must be positive")
    if math.isfinite(device.images_per_s) and not shape.gpus_per_node:
        raise ValueError(f"device {device.name} needs GPUs on the shape (gpus_per_node is 0)")
    nodes, cores, gpus = shape.nodes, shape.cores_per_node, shape.gpus_per_node
    cpus = shape.cpus
    all_gpus = nodes * gpus
    amount = shape.task_gpu_amount
    n = workload.num_images
    crop = workload.crop_bytes_per_image
    crop_move = (rates.crop_transfer_s_per_byte or rates.transfer_s_per_byte) * crop  # one way through Arrow
    model_cpu = device.host_s_per_image
    common = dict(rates=rates, records_per_batch=workload.records_per_batch, batch_size=workload.batch_size)

    default_slots = nodes * _slots(cores, gpus, amount)
    input_tasks, empty = _input_tasks(workload, nodes * cores)
    ahead, read_s = _ahead(workload, rates, nodes * cores, default_slots, cpus)
    move_in = read_s + rates.transfer_s_per_byte * workload.input_bytes_per_image  # read, to Python
    stages: list[Stage]
    jobs = 1
    if topology == "fused":
        stages = [
            _stage(
                "fused",
                n,
                input_tasks,
                default_slots,
                cpus,
                all_gpus,
                cpu_per_image=rates.preprocess_s + move_in + model_cpu,
                jvm_per_image=move_in,
                device=device,
                rebuild_model=workload.rebuild_model_per_batch,
                prefetch=workload.prefetch,
                empty_tasks=empty,
                job_cpu_s=rates.job_cpu_s,
                **common,
            )
        ]
    elif topology == "model_server":
        stages = [
            _stage(
                "served",
                n,
                input_tasks,
                default_slots,
                cpus,
                all_gpus,
                cpu_per_image=rates.preprocess_s + move_in + rates.serve_cpu_s_per_image + model_cpu,
                jvm_per_image=move_in,
                device=device,
                rebuild_model=False,
                empty_tasks=empty,
                request_s=rates.request_s,
                job_cpu_s=rates.job_cpu_s,
                **common,
            )
        ]
    elif topology in ("split", "stage_level"):
        predict_amount = amount
        if topology == "stage_level":
            predict_amount = shape.predict_gpu_amount if shape.predict_gpu_amount is not None else amount
        predict_slots = nodes * _slots(cores, gpus, predict_amount)
        shuffle = rates.shuffle_s_per_byte * crop / 2
        pre = _stage(
            "preprocess",
            n,
            input_tasks,
            default_slots,
            cpus,
            all_gpus,
            cpu_per_image=rates.preprocess_s + move_in + crop_move + shuffle,
            jvm_per_image=move_in + crop_move + shuffle,
            device=None,
            rebuild_model=False,
            empty_tasks=empty,
            job_cpu_s=rates.job_cpu_s / 2,  # one job, two stages
            **common,
        )
        pred = _stage(
            "predict",
            n,
            workload.predict_partitions or predict_slots,
            predict_slots,
            cpus,
            all_gpus,
            cpu_per_image=shuffle + crop_move + model_cpu,
            jvm_per_image=shuffle + crop_move,
            device=device,
            rebuild_model=workload.rebuild_model_per_batch,
            job_cpu_s=rates.job_cpu_s / 2,
            **common,
        )
        stages = [pre, pred]
    else:
        pre_nodes = shape.preprocess_nodes or nodes
        pre_cores = shape.preprocess_cores_per_node or cores
        separate = shape.preprocess_nodes is not None
        pre_slots = pre_nodes * (pre_cores if separate else _slots(cores, gpus, amount))
        pre_cpus = pre_nodes * (shape.preprocess_cpus_per_node or pre_cores) if separate else cpus
        if separate:  # job 1, and its repartition, on the CPU cluster
            input_tasks, empty = _input_tasks(workload, pre_nodes * pre_cores)
            ahead, read_s = _ahead(workload, rates, pre_nodes * pre_cores, pre_slots, pre_cpus)
            move_in = read_s + rates.transfer_s_per_byte * workload.input_bytes_per_image
        speed = shape.preprocess_cpu_speed if separate else 1.0
        jvm_side = move_in + crop_move + rates.write_s_per_byte * crop
        pre = _stage(
            "preprocess",
            n,
            input_tasks,
            pre_slots,
            pre_cpus,
            0 if separate else all_gpus,
            cpu_per_image=(rates.preprocess_s + jvm_side) / speed,
            jvm_per_image=jvm_side / speed,
            device=None,
            rebuild_model=False,
            empty_tasks=empty,
            job_cpu_s=rates.job_cpu_s,
            **common,
        )
        # job 2 reads one task per file job 1 wrote, a file per preprocess task (the harness keeps files whole)
        pred = _stage(
            "predict",
            n,
            pre.tasks,
            default_slots,
            cpus,
            all_gpus,
            cpu_per_image=rates.read_s_per_byte * crop + crop_move + model_cpu,
            jvm_per_image=rates.read_s_per_byte * crop + crop_move,
            device=device,
            rebuild_model=workload.rebuild_model_per_batch,
            job_cpu_s=rates.job_cpu_s,
            **common,
        )
        stages = [pre, pred]
        jobs = 2
    stages = ahead + stages
    fixed = jobs * rates.job_s
    seconds = fixed + sum(stage.seconds for stage in stages)
    slowest = max(stages, key=lambda stage: stage.seconds)
    bound = JOB_OVERHEAD if fixed > slowest.seconds else slowest.bound
    utilization = _utilization(topology, stages, seconds, cpus, all_gpus, shape)
    return Prediction(topology, n / seconds, seconds, bound, utilization, tuple(stages))


def _utilization(
    topology: str, stages: list[Stage], seconds: float, cpus: float, gpus: int, shape: Shape
) -> dict[str, float]:
    """Busy fraction of each resource over the whole run: CPU work over cores x time, device work over GPUs x
    time, and for two_stage with a cluster of its own its cores apart (they idle while job 2 runs)."""
    if topology == "two_stage" and shape.preprocess_nodes is not None:
        *pre, pred = stages  # job 1's stages (a repartition's too) ran on the CPU cluster
        return {
            "preprocess cluster cores": sum(stage.cpu_s for stage in pre) / (pre[0].cpus * seconds),
            "cores": pred.cpu_s / (cpus * seconds),
            "gpus": pred.device_s / (gpus * seconds) if gpus else 0.0,
        }
    return {
        "cores": sum(stage.cpu_s for stage in stages) / (cpus * seconds),
        "gpus": sum(stage.device_s for stage in stages) / (gpus * seconds) if gpus else 0.0,
    }


def shape_of(
    config: Mapping[str, Any],
    cpu_count: int | None = None,
    gpu_plan: Mapping[str, Any] | None = None,
    node_cpus: float | None = None,
) -> tuple[str, Shape, Workload]:
    """The topology, shape and workload a result recorded (its `config`), for the check sweep to predict.

    `cpu_count`: the physical cores of the machine the run ran on (the result's env), which local-cluster and
    standalone workers share however many cores they announce. `gpu_plan`: the GPU amounts the run resolved
    (the result's `cluster.gpus`), which stand for the config's `gpu.task_amount=0` ("as the topology needs").
    `node_cpus`: for cluster=remote, the physical cores under its nodes, each machine counted once
    (`pipeline.spark.nodes.machine_cpus` of the result's `evidence.task_nodes`): N namespace nodes on this machine share
    its cores, N machines each have their own. Without it a remote cluster's node has the cores it announces.
    """
    cluster, spark = config["cluster"], config.get("spark") or {}
    gpu = {**(config.get("gpu") or {}), **{key: value for key, value in (gpu_plan or {}).items() if value}}
    topology_config = config.get("topology") or {}
    topology = str(topology_config.get("kind", "fused"))
    if cluster["mode"] == "local":
        nodes, cores = 1, int(cluster.get("cores") or cpu_count or 1)
    else:
        nodes = int(cluster.get("workers", 1))
        cores = int(cluster.get("worker_cores", 1)) // int(cluster.get("task_cpus", 1))
    gpus = int(gpu.get("emulate") or gpu.get("executor_amount") or 0)
    if cluster["mode"] == "remote":  # other machines: what they are, not what the driver's machine is
        physical = None if node_cpus is None else node_cpus / nodes
    else:
        physical = None if cpu_count is None else cpu_count / nodes
    preprocess_cluster = topology_config.get("preprocess_cluster")
    pre_nodes = pre_cores = None
    if preprocess_cluster:
        if preprocess_cluster["mode"] == "local":
            pre_nodes, pre_cores = 1, int(preprocess_cluster.get("cores") or cpu_count or 1)
        else:
            pre_nodes = int(preprocess_cluster.get("workers", 1))
            pre_cores = int(preprocess_cluster.get("worker_cores", 1)) // int(preprocess_cluster.get("task_cpus", 1))
    shape = Shape(
        nodes=nodes,
        cores_per_node=cores,
        gpus_per_node=gpus,
        task_gpu_amount=float(gpu.get("task_amount") or 0.0) if cluster["mode"] != "local" else 0.0,
        predict_gpu_amount=float(gpu["predict_task_amount"]) if topology == "stage_level" else None,
        cpus_per_node=physical,
        preprocess_nodes=pre_nodes,
        preprocess_cores_per_node=pre_cores,
        preprocess_cpus_per_node=None if cpu_count is None or pre_nodes is None else cpu_count / pre_nodes,
    )
    dataset, model, udf = config.get("dataset") or {}, config.get("model") or {}, config.get("udf") or {}
    workload = Workload(
        num_images=int(dataset.get("num_images", 1)),
        batch_size=int(model.get("batch_size", 32)),
        records_per_batch=int(spark.get("max_records_per_batch", 128)),
        partitions=spark.get("partitions"),
        repartition=spark.get("partitions") is not None,  # measure() repartitions the scanned images
        predict_partitions=topology_config.get("predict_partitions"),
        input_bytes_per_image=image_bytes(dataset.get("format")),
        rebuild_model_per_batch=bool(udf.get("rebuild_model_per_batch", False)),
        prefetch=bool(udf.get("prefetch")) and topology == "fused",
        row_group_size=dataset.get("row_group_size"),
        images_per_file=int(dataset.get("images_per_file") or 1000),
    )
    return topology, shape, workload


def device_of(config: Mapping[str, Any]) -> Device:
    """The device a recorded config ran on: its `device` profile (model=accelerator), no device for
    model=null_model; a real model on this machine's CPU or GPU has no profile to model it by (ValueError)."""
    if (config.get("model") or {}).get("name") == "null_model":
        return NULL_DEVICE
    profile = config.get("device")
    if not profile:
        raise ValueError("the run has no device profile (model=accelerator device=...): its model cannot be modelled")
    return Device(
        str(profile["name"]),
        float(profile["images_per_s"]),
        int(profile["batch_size"]),
        float(profile.get("latency_s") or 0.0),
        float(profile.get("host_s_per_image") or 0.0),
    )
