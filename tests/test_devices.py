"""Where a task's model runs: one rule for every engine, by the kind of GPUs its scheduler hands out. Emulated GPU
addresses mean the CPU even on a machine with GPUs; real ones mean `cuda:N` as the task's process numbers them."""

from __future__ import annotations

import pytest
import torch

from pipeline.config.validate import validate
from pipeline.engines.ray import gpus_of
from pipeline.inference.model import ModelSpec, pick_device
from pipeline.inference.preprocess import Preprocessing
from pipeline.inference.steps import Inference
from pipeline.run import build_inference
from tests.helpers.config import compose_config


@pytest.fixture
def gpu_machine(monkeypatch):
    """A machine where torch sees GPUs, and no CUDA_VISIBLE_DEVICES of its own."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


def test_an_emulated_gpu_address_runs_the_model_on_the_cpu_of_a_gpu_machine(gpu_machine):
    assert pick_device("emulated", ["1"]) == "cpu"
    assert pick_device("emulated", ["0"]) == "cpu"


def test_a_real_gpu_address_is_the_cuda_device_of_that_index(gpu_machine):
    assert pick_device("real", ["1"]) == "cuda:1"


def test_a_real_gpu_is_numbered_as_cuda_visible_devices_shows_it_to_the_process(gpu_machine, monkeypatch):
    """Ray sets CUDA_VISIBLE_DEVICES in each actor to the GPUs it gave it: the actor's GPU 3 is its cuda:0."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    assert pick_device("real", ["3"]) == "cuda:0"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert pick_device("real", ["3"]) == "cuda:1"


def test_without_gpus_scheduled_the_model_takes_the_machines_first_gpu(gpu_machine):
    assert pick_device("none") == "cuda:0"


def test_without_cuda_every_kind_runs_on_the_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert {pick_device(kind, ["0"]) for kind in ("real", "emulated", "none")} == {"cpu"}


def test_a_spark_runs_emulated_gpus_reach_its_tasks_as_the_cpu(gpu_machine):
    """gpu.emulate=2 on a 1-GPU machine: the task handed address 1 must not ask for cuda:1."""
    config = compose_config("cluster=local_cluster", "gpu.emulate=2", "model=null_model")
    inference = build_inference(config, None, gpus=validate(config).gpus.kind)
    assert inference.device(["1"]) == "cpu"


def test_the_simulated_device_names_its_gpu_whatever_the_kind(gpu_machine):
    inference = Inference(preprocessing=Preprocessing(), model=ModelSpec(name="accelerator"), batch_size=4)
    assert inference.device(["1"]) == "simulated:1"


def test_ray_declares_the_emulated_gpus_asked_for_even_on_a_gpu_machine(gpu_machine):
    assert gpus_of(compose_config("engine=ray", "gpu.emulate=2")) == (2, "emulated")
    assert gpus_of(compose_config("engine=ray")) == (1, "real")
