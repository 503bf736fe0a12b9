"""The model server process: `python -m pipeline.serving.server SPEC.json`, started by the harness
(`pipeline.serving.launcher`, on this machine) or by a task on each worker node of a cluster of other machines
(`pipeline.serving.nodes`), in the server environment (`pipeline.serving.environment`).

It loads our own model code (`pipeline.inference.model.load_model` and `predict` from a ModelSpec, the
preprocessing's `normalize`; nothing Spark, no pyarrow) as one model instance per device in the spec (one per
GPU, real or emulated; on a CPU without GPUs one instance), and serves them through NVIDIA PyTriton: Triton's
dynamic batcher merges the tasks' requests into batches of up to `max_batch_size` crops and hands each to a
free instance. It listens on the spec's `address` (127.0.0.1 by default; a node's own address on a cluster);
Triton's statistics API is restricted to a token only the harness knows. When it is ready it writes the
spec's `ready` file (atomically): its PID, ports and instances. SIGTERM stops it through PyTriton, which stops
the Triton server it started. Who sends it: the harness; the kernel when the job that started it dies
(PR_SET_PDEATHSIG); on a node, this process itself when the executor JVM of the spec's `watch` is gone (its
parent, a reused Python worker, may end first). With a `status` file in the spec it publishes there, every
STATUS_EVERY_S, a sequence number, the CPU seconds of its process tree and its simulated devices' totals:
what the harness on another machine cannot read with psutil.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.inference import accelerator
from pipeline.inference.accelerator import simulated_predictions
from pipeline.inference.model import ModelSpec, SimulatedDevice, load_model, predict
from pipeline.inference.preprocess import Preprocessing, to_device
from pipeline.rundir import atomic_write
from pipeline.runtime.lifetime import die_with_parent, die_with_process, parent_from_env

log = logging.getLogger("pipeline.serving.server")

MODEL_NAME = "classifier"
INPUT = "crops"
OUTPUTS = {"top1": (np.int32, (1,)), "prob": (np.float32, (1,)), "top5": (np.int32, (5,))}
STATUS_EVERY_S = 0.2


def _stop(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def publish_usage(path: Path) -> None:
    """This process's simulated-device totals (held, waited, calls) for the harness to read between passes:
    Triton's compute time also holds PyTriton's transfer of each batch into this process, not the device."""
    usage = accelerator.usage()
    atomic_write(path, json.dumps({"busy_s": usage.busy_s, "wait_s": usage.wait_s, "calls": usage.calls}).encode())


def tree_cpu_s() -> float:
    """CPU seconds (user + system) of this process and every process under it (Triton, its Python stubs)."""
    import psutil

    total = 0.0
    me = psutil.Process()
    for process in [me, *me.children(recursive=True)]:
        try:
            times = process.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


def publish_status(path: Path, stop: threading.Event) -> None:
    """Until `stop`: every STATUS_EVERY_S, `path` rewritten (atomically) with the next sequence number, the
    CPU seconds of this process tree and the simulated devices' totals. A reader that waits for the number to
    go up by two knows the figures it then reads were taken after it started waiting."""
    sequence = 0
    while True:
        usage = accelerator.usage()
        status = {
            "sequence": sequence,
            "cpu_s": tree_cpu_s(),
            "busy_s": usage.busy_s,
            "wait_s": usage.wait_s,
            "calls": usage.calls,
        }
        atomic_write(path, json.dumps(status).encode())
        sequence += 1
        if stop.wait(STATUS_EVERY_S):
            return


def instance_function(
    index: int, device: str, spec: ModelSpec, preprocessing: Preprocessing, counts: list[int], usage_file: Path
):
    """The inference function of instance `index`: its own model on `device`, normalize and predict one batch
    the dynamic batcher formed; `counts[index]` counts the batches it ran; a simulated device's totals go to
    `usage_file` after each batch."""
    from pytriton.decorators import batch

    model = load_model(spec, "cpu" if device.startswith("simulated") else device, rebuild=True)  # its own object

    @batch
    def infer(crops: np.ndarray) -> dict[str, np.ndarray]:
        counts[index] += 1
        if spec.name == "accelerator":  # the simulated device of this instance's GPU: held, then null answers
            predicted = simulated_predictions(spec, torch.from_numpy(crops), device)
            publish_usage(usage_file)
        else:
            inputs = preprocessing.normalize(to_device(torch.from_numpy(crops), device))
            predicted = predict(model, inputs, spec)
        return {
            "top1": predicted.top1.astype(np.int32).reshape(-1, 1),
            "prob": predicted.prob.astype(np.float32).reshape(-1, 1),
            "top5": predicted.top5.astype(np.int32),
        }

    return infer


def serve(spec: dict[str, Any]) -> None:
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
    from pytriton.triton import Triton, TritonConfig, TritonSecurityConfig

    torch.set_num_threads(spec["threads"])
    simulated = spec["model"].pop("device", None)
    model = ModelSpec(**spec["model"], device=SimulatedDevice(**simulated) if simulated else None)
    preprocessing = Preprocessing(**spec["preprocessing"])
    started = time.perf_counter()
    counts = [0] * len(spec["instances"])
    functions = [
        instance_function(i, instance["device"], model, preprocessing, counts, Path(spec["usage"]))
        for i, instance in enumerate(spec["instances"])
    ]
    load_s = time.perf_counter() - started
    ports, address = spec["ports"], spec.get("address", "127.0.0.1")
    config = TritonConfig(
        http_address=address,
        http_port=ports["http"],
        grpc_address=address,
        grpc_port=ports["grpc"],
        metrics_address=address,
        metrics_port=ports["metrics"],
        allow_gpu_metrics=False,
        exit_timeout_secs=5,
        log_verbose=0,
    )
    size = spec["crop_size"]
    with Triton(
        config=config,
        workspace=spec["workspace"],
        security_config=TritonSecurityConfig(access_token=spec["token"]),
    ) as triton:
        triton.bind(
            model_name=MODEL_NAME,
            infer_func=functions,
            inputs=[Tensor(name=INPUT, dtype=np.uint8, shape=(3, size, size))],
            outputs=[Tensor(name=name, dtype=dtype, shape=shape) for name, (dtype, shape) in OUTPUTS.items()],
            config=ModelConfig(
                max_batch_size=spec["max_batch_size"],
                batcher=DynamicBatcher(max_queue_delay_microseconds=spec["max_queue_delay_us"]),
            ),
            strict=True,
        )
        ready = {
            "pid": os.getpid(),
            "ports": ports,
            "instances": spec["instances"],
            "model_load_s": load_s,
            "torch_threads": torch.get_num_threads(),
        }
        stop = threading.Event()
        if spec.get("status"):
            publisher = threading.Thread(target=publish_status, args=(Path(spec["status"]), stop), daemon=True)
            publisher.start()
        path = Path(spec["ready"])
        path.with_suffix(".tmp").write_text(json.dumps(ready))
        os.replace(path.with_suffix(".tmp"), path)
        log.info("model server ready: %s", ready)
        try:
            triton.serve()
        finally:
            stop.set()
            log.info("model server stopping; batches per instance: %s", counts)


def main(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    signal.signal(signal.SIGTERM, _stop)
    if spec.get("watch"):  # a node's server: it lives as long as its executor, not its Python worker
        die_with_process(spec["watch"]["pid"], spec["watch"]["started"], signal.SIGTERM)
    else:
        die_with_parent(parent_from_env(), signal.SIGTERM)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    serve(spec)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
