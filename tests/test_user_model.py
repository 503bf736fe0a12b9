"""The user's model end to end (issue 28): `model.arch=resnet18` and a factory's model, each run by every UDF
style, agree with the in-process reference; a whole `python -m pipeline` sweep of each verifies and names the model
in its results and its report.

The style matrix runs in the test session's one SparkSession (as tests/test_variants.py does, seconds a case):
what a style does with the user's network is the same in a job's own application. The whole runs prove what
only the CLI does: the job process builds the model from the options, verifies, and the report names it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config.schema import UdfStyle
from pipeline.data import weights
from pipeline.engines.spark import measure
from pipeline.inference.steps import Inference
from pipeline.run import build_inference, preprocessing_of
from pipeline.verify import compare, reference_predictions
from tests.helpers.cli import checkout_env, cli, result_of
from tests.helpers.config import compose_config

MODELS = {
    "resnet18": ("resnet18", ("model.arch=resnet18",)),
    # a smaller crop keeps the factory's runs short; its network pools adaptively
    "factory": (
        "factory tests.helpers.models:tiny",
        ("model.factory=tests.helpers.models:tiny", "preprocess.resize_size=72", "preprocess.crop_size=64"),
    ),
}
STYLES = [style.value for style in UdfStyle]


def inference_of(model: str, cache_dir: Path) -> Inference:
    """What a run of `model` gives its tasks: the network, its random weights calibrated once into the cache."""
    config = compose_config(*MODELS[model][1])
    spec = config.model
    path = weights.resolve(spec.weights, spec.seed, cache_dir, spec.arch, spec.factory, preprocessing_of(config))
    return build_inference(config, path)


@pytest.mark.slow
@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("model", sorted(MODELS))
def test_every_udf_style_runs_the_user_s_model_in_agreement_with_the_reference(
    spark, tmp_path, tiny_dataset, cache_dir, model, style
):
    config = compose_config(f"udf={style}", *MODELS[model][1], "warmup=0", "repeats=1", "verify=true")
    inference = inference_of(model, cache_dir)
    run = measure(spark, config, tiny_dataset, inference, tmp_path, predict_slots=2)
    assert run.timed[0].predicted == tiny_dataset.num_images
    agreement = compare(run.predictions, reference_predictions(tiny_dataset, inference, cache_dir))
    assert agreement["top1_agreement"] == 1.0 and agreement["duplicate_ids"] == 0
    assert agreement["compared"] == tiny_dataset.num_images


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("model", sorted(MODELS))
def test_a_sweep_of_the_user_s_model_verifies_and_names_it_in_its_results_and_report(tmp_path, cache_dir, model):
    name, overrides = MODELS[model]
    sweep = tmp_path / "sweep"
    done = cli(
        tmp_path,
        "-m",
        "udf=map_in_pandas",  # a sweep of one job: the report is a sweep's
        *overrides,
        "verify=true",
        "dataset.num_images=16",
        "warmup=0",
        "repeats=1",
        f"hydra.sweep.dir={sweep}",
        f"cache_dir={cache_dir}",
        env=checkout_env(),
        timeout=540,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = [result_of(job) for job in sorted(sweep.iterdir()) if (job / "result.json").is_file()]
    assert [result["variant"]["udf"] for result in results] == ["map_in_pandas"]
    for result in results:
        assert result["status"] == "ok", result["error"]
        assert result["metrics"]["top1_agreement"] == 1.0
        assert result["metrics"]["verified_images"] == 16
        assert result["variant"]["model"] == name
        assert result["env"]["model"]["label"] == f"{name} (random weights)"
    report = (sweep / "report.html").read_text()
    assert f"model={name}" in report and f"{name} (random weights), input" in report
