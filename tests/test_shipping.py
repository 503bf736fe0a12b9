"""What executors get from the driver when they may see nothing of its disk: the weights file, shipped with the
application and opened where the task runs."""

from __future__ import annotations

import pickle

from pipeline.inference.model import ModelSpec
from pipeline.inference.preprocess import Preprocessing
from pipeline.inference.steps import Inference
from pipeline.spark.shipping import SparkFile, ship_file, ship_weights


def _read(name: str):
    def task(_):
        with open(SparkFile(name), "rb") as shipped:
            yield shipped.read()

    return task


def test_a_shipped_file_opens_in_a_task_by_its_name_alone(spark, tmp_path):
    path = tmp_path / "weights-a.pt"
    path.write_bytes(b"state dict bytes")
    record = ship_file(spark, path)
    assert spark.sparkContext.parallelize([0], 1).mapPartitions(_read(path.name)).collect() == [b"state dict bytes"]
    assert record["file"] == path.name and record["bytes"] == 16 and record["how"] == "SparkContext.addFile"


def test_shipping_the_weights_hands_tasks_a_spark_file_in_place_of_the_drivers_path(spark, tmp_path):
    path = tmp_path / "weights-b.pt"
    path.write_bytes(b"x" * 100)
    inference = Inference(preprocessing=Preprocessing(), model=ModelSpec(weights_file=str(path)), batch_size=2)
    shipped, record = ship_weights(spark, inference)
    assert shipped.model.weights_file == SparkFile(path.name) and record["weights"]["bytes"] == 100
    assert pickle.loads(pickle.dumps(shipped)) == shipped  # what travels to the tasks


def test_a_model_without_weights_ships_nothing(spark):
    inference = Inference(preprocessing=Preprocessing(), model=ModelSpec(name="null_model"), batch_size=2)
    assert ship_weights(spark, inference) == (inference, {})
