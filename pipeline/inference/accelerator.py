"""A simulated accelerator (`model=accelerator`): ResNet50 on a named device, without the device.

On this machine every variant is bound by ResNet50 on two CPU cores, so the CPU:GPU balance that decides a
GPU cluster's answer never shows. The stand-in gives it back: each model call holds its task's GPU slot for
`latency_s + n / images_per_s` seconds by sleeping (the GIL released, no CPU spent), under an exclusive
`fcntl.flock` on one lock file per emulated GPU, so two tasks on the same GPU queue as on a real one; it
spends the host CPU a real call costs per image for real (the uint8 crops copied into a preallocated
buffer, then a busy loop up to `host_s_per_image` of this thread's CPU time per image); and it answers with
the null model's fixed predictions, so every image is accounted for the same way.

A GPU is named by the executor that owns it and its address: emulated addresses restart at 0 on every
worker, so the lock key is the executor JVM's PID (the nearest `java` ancestor of the Python worker) and the
address. A task without GPU addresses (`cluster=local`, `engine=torch`) shares one device with every task of
its JVM (or process): the single-GPU machine. Locks live in `lock_dir`, a temporary directory the run
creates and removes (`device_locks`), or on a machine that does not see it, in the executor's own working
directory; a GPU belongs to one machine, so its lock never needs to be seen by another.

Each process counts the time its calls held a device, waited for one and spent on the host (`usage`), which
task records carry as evidence of the bound: a GPU-bound run shows its devices busy near 100%, a CPU-bound
one shows them idle.
"""

from __future__ import annotations

import fcntl
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil
import torch

from pipeline.inference.model import SIMULATED, ModelSpec, Predictions, SimulatedDevice, load_model, predict


@dataclass
class Usage:
    """Seconds this process's model calls held a device and waited for its lock, and how many calls."""

    busy_s: float = 0.0
    wait_s: float = 0.0
    calls: int = 0


_USAGE = Usage()
_BUFFER: dict[str, torch.Tensor] = {}  # the "pinned" host buffer, grown to the largest batch seen


def usage() -> Usage:
    """A copy of this process's totals so far (task records keep the difference over a task)."""
    return Usage(_USAGE.busy_s, _USAGE.wait_s, _USAGE.calls)


def _executor_pid() -> int:
    """The PID of the JVM whose Python worker this is (Spark), else this process's own (torch, Ray)."""
    process = psutil.Process()
    for parent in process.parents():
        try:
            if parent.name() == "java":
                return parent.pid
        except psutil.Error:
            break
    return process.pid


_OWNER: list[int] = []  # this process's executor PID, looked up once


def lock_path(device: SimulatedDevice, gpu_addresses: list[str]) -> Path:
    """The lock file of the GPU a task holds: its executor's and its first address's. In the run's lock directory
    on the machine that made it; on another machine, which sees nothing of the driver's temporary directories, in
    the process's working directory (a Spark executor's own directory of the application on its worker)."""
    if not _OWNER:
        _OWNER.append(_executor_pid())
    address = gpu_addresses[0] if gpu_addresses else "any"
    made = Path(device.lock_dir)
    return (made if made.is_dir() else Path.cwd()) / f"executor-{_OWNER[0]}-gpu-{address}.lock"


def _host_copy(crops: torch.Tensor, device: SimulatedDevice) -> None:
    """The host side of a call: copy the uint8 crops into the preallocated buffer, then spend this thread's
    CPU up to `host_s_per_image` per image (the copy counts toward it)."""
    started = time.thread_time()
    images = crops.shape[0]
    buffer = _BUFFER.get("crops")
    if buffer is None or buffer.shape[0] < images or buffer.shape[1:] != crops.shape[1:]:
        buffer = _BUFFER["crops"] = torch.empty(crops.shape, dtype=torch.uint8)
    buffer[:images].copy_(crops)
    target = started + images * device.host_s_per_image
    while time.thread_time() < target:
        pass


def hold(device: SimulatedDevice, crops: torch.Tensor, gpu_addresses: list[str]) -> None:
    """One model call on the simulated device: the host copy, then the device held for `call_seconds`."""
    _host_copy(crops, device)
    path = lock_path(device, gpu_addresses)
    asked = time.perf_counter()
    with open(path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        got = time.perf_counter()
        time.sleep(device.call_seconds(crops.shape[0]))
        _USAGE.busy_s += time.perf_counter() - got
        fcntl.flock(lock, fcntl.LOCK_UN)
    _USAGE.wait_s += got - asked
    _USAGE.calls += 1


@contextmanager
def device_locks() -> Iterator[str]:
    """A directory for the GPU lock files of one run, outside the repository, removed when the run ends."""
    path = tempfile.mkdtemp(prefix="spark-inference-bench-gpu-locks-")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def addresses(device: str) -> list[str]:
    """The GPU address in a simulated task's device string (`pipeline.inference.model.pick_device`), if any."""
    kind, _, address = device.partition(":")
    return [address] if kind == SIMULATED and address else []


def simulated_predictions(spec: ModelSpec, crops: torch.Tensor, device: str) -> Predictions:
    """One model call of `model=accelerator` on the task's `device` string: the device held as long as
    `spec.device` says (none without one: the in-process reference), and the null model's predictions."""
    if spec.device is not None:
        hold(spec.device, crops, addresses(device))
    placeholder = torch.zeros((crops.shape[0], 3, 1, 1))  # the null model reads only the batch size
    return predict(load_model(spec, "cpu"), placeholder, spec)
