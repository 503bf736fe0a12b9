"""The user's model end to end (issue 28): `model.arch=resnet18` and a factory's model, each run by every UDF
style as one sweep of whole `python -m pipeline` runs, agree with the in-process reference, and the results and
the sweep's report name the model."""

from __future__ import annotations

import pytest

from pipeline.config.schema import UdfStyle
from tests.helpers.cli import checkout_env, cli, result_of

SMALL_RUN = ("verify=true", "dataset.num_images=16", "warmup=0", "repeats=1")
MODELS = {
    "resnet18": ("resnet18", ("model.arch=resnet18",)),
    # a smaller crop keeps the factory's runs short; its network pools adaptively
    "factory": (
        "factory tests.helpers.models:tiny",
        ("model.factory=tests.helpers.models:tiny", "preprocess.resize_size=72", "preprocess.crop_size=64"),
    ),
}


@pytest.mark.slow
@pytest.mark.timeout(1500)
@pytest.mark.parametrize("model", sorted(MODELS))
def test_every_udf_style_runs_the_user_s_model_in_agreement_with_the_reference(tmp_path, cache_dir, model):
    name, overrides = MODELS[model]
    sweep = tmp_path / "sweep"
    done = cli(
        tmp_path,
        "-m",
        "udf=glob(*)",
        *overrides,
        *SMALL_RUN,
        f"hydra.sweep.dir={sweep}",
        f"cache_dir={cache_dir}",
        env=checkout_env(),
        timeout=1400,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = [result_of(job) for job in sorted(sweep.iterdir()) if (job / "result.json").is_file()]
    assert sorted(result["variant"]["udf"] for result in results) == sorted(style.value for style in UdfStyle)
    for result in results:
        assert result["status"] == "ok", result["error"]
        assert result["metrics"]["top1_agreement"] == 1.0
        assert result["metrics"]["verified_images"] == 16
        assert result["variant"]["model"] == name
        assert result["env"]["model"]["label"] == f"{name} (random weights)"
    report = (sweep / "report.html").read_text()
    assert f"model={name}" in report and f"{name} (random weights), input" in report
