"""The inference steps' plumbing that every variant relies on: step kinds, re-batching, and prefetching."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch.utils.data._utils.pin_memory import pin_memory

from pipeline.data import synthetic
from pipeline.inference.model import ModelSpec, Predictions
from pipeline.inference.preprocess import Preprocessing
from pipeline.inference.steps import STEPS, Fused, Inference, Predict, Preprocess, Served, prefetched, rebatch
from pipeline.serving.client import ServerAddress


def test_step_kinds_say_what_they_read_and_whether_they_run_the_model():
    assert {name: (kind.reads_images, kind.runs_model) for name, kind in STEPS.items()} == {
        "fused": (True, True),
        "preprocess": (True, False),
        "predict": (False, True),
        "served": (True, True),  # topology=model_server: decodes, and its rows out are the server's predictions
    }
    assert Fused.schema == Predict.schema and Preprocess.inputs == Fused.inputs


def test_the_served_step_times_decoding_and_the_servers_round_trip(monkeypatch):
    def answer(self, crops):  # a server that takes 50 ms a request
        time.sleep(0.05)
        return Predictions(np.zeros(len(crops), np.int64), np.ones(len(crops), np.float32), np.zeros((len(crops), 5)))

    monkeypatch.setattr(ServerAddress, "predict", answer)
    inference = Inference(
        preprocessing=Preprocessing(),
        model=ModelSpec(name="null_model"),
        batch_size=2,
        server=ServerAddress("127.0.0.1:1"),
    )
    columns = {"id": ["a", "b"], "label": [1, 2], "image": [synthetic.synth_jpeg(3, i) for i in range(2)]}
    output = Served(inference)(columns, "cpu")
    assert len(output) == 2 and output.prepare_s > 0 and output.finish_s >= 0.05


def test_the_cpu_phase_records_its_wall_time_and_the_cpu_its_process_spent_apart(monkeypatch):
    decode = Preprocessing.crops

    def waiting_for_a_core(self, images, *args):  # 0.2 s of wall time that is no CPU time
        time.sleep(0.2)
        return decode(self, images, *args)

    monkeypatch.setattr(Preprocessing, "crops", waiting_for_a_core)
    inference = Inference(preprocessing=Preprocessing(), model=ModelSpec(name="null_model"), batch_size=2)
    output = Fused(inference)(_images(4), "cpu")
    assert output.prepare_s >= 0.4
    assert 0 < output.prepare_cpu_s < output.prepare_s - 0.3


def _images(count: int) -> dict:
    images = [synthetic.synth_jpeg(3, i) for i in range(count)]
    return {"id": [str(i) for i in range(count)], "label": [1] * count, "image": images}


def test_the_data_loaders_pinning_pins_a_prepared_batchs_crops(monkeypatch):
    """torch's DataLoader (pin_memory=True) pins a batch by its `pin_memory()`: a dataclass without one passes
    through unpinned. Pinned memory needs CUDA, so a stand-in records what would be pinned."""
    pinned_tensors = []
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda tensor: pinned_tensors.append(tensor) or tensor.clone())
    prepared = Inference(preprocessing=Preprocessing(), model=ModelSpec(name="null_model"), batch_size=2).crop_batch(
        _images(2)
    )
    pinned = pin_memory(prepared)
    assert pinned_tensors == [prepared.crops] and torch.equal(pinned.crops, prepared.crops)
    assert (pinned.ids, pinned.positions) == (prepared.ids, prepared.positions)


def test_a_batch_still_encoded_has_no_crops_to_pin():
    """decode_on=model_device: nothing is pinned, so nothing fails on a machine without CUDA either."""
    preprocessing = Preprocessing(decoder="torchvision", decode_on="model_device")
    prepared = Inference(preprocessing=preprocessing, model=ModelSpec(name="null_model"), batch_size=2).crop_batch(
        _images(2)
    )
    assert pin_memory(prepared) is prepared


def test_rebatch_fills_every_batch_but_the_last():
    batches = [{"id": ["a", "b", "c"]}, {"id": ["d"]}, {"id": ["e", "f", "g", "h", "i"]}]
    assert [batch["id"] for batch in rebatch(batches, 4)] == [["a", "b", "c", "d"], ["e", "f", "g", "h"], ["i"]]


def test_rebatch_cuts_a_batch_of_several_model_calls_into_all_of_them():
    batches = [{"id": list(range(10)), "x": list(range(10, 20))}, {"id": [10], "x": [20]}]
    assert [(batch["id"], batch["x"]) for batch in rebatch(batches, 4)] == [
        ([0, 1, 2, 3], [10, 11, 12, 13]),
        ([4, 5, 6, 7], [14, 15, 16, 17]),
        ([8, 9, 10], [18, 19, 20]),
    ]


@dataclass
class _Recorder:
    """A step stand-in whose prepare records, per batch, the thread that prepared it."""

    prepared: dict[int, str]
    wanted: threading.Event
    count: int

    def prepare(self, batch: int) -> int:
        self.prepared[batch] = threading.current_thread().name
        if len(self.prepared) == self.count:
            self.wanted.set()
        return batch


def _consume_first(depth: int, batches: int = 3) -> tuple[dict[int, str], bool]:
    """Take the first prepared batch, then wait (as the model would) to see what gets prepared meanwhile."""
    recorder = _Recorder({}, threading.Event(), batches)
    stream = prefetched(recorder, range(batches), depth)
    assert next(stream) == 0
    ahead = recorder.wanted.wait(timeout=2 if depth else 0.2)
    seen = dict(recorder.prepared)
    assert list(stream) == list(range(1, batches))
    return seen, ahead


@pytest.mark.parametrize("depth", [1, 2])
def test_prefetch_prepares_the_next_batches_while_the_current_one_is_in_the_model(depth):
    seen, ahead = _consume_first(depth, batches=depth + 1)
    assert ahead and sorted(seen) == list(range(depth + 1))
    assert all(name.startswith("prefetch") for name in seen.values())


def test_without_prefetch_a_batch_is_prepared_only_when_asked_for():
    seen, ahead = _consume_first(0)
    assert not ahead and list(seen) == [0]
    assert seen[0] == threading.current_thread().name
