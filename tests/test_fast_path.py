"""The fast-path options (torchvision decoding, decoding on the model's device, bf16, channels_last) and the
null model: each changes how the work is done, never which answer it gives beyond its stated tolerance."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.config.schema import ConfigError
from pipeline.config.validate import validate
from pipeline.data import synthetic
from pipeline.engines.spark import measure
from pipeline.inference.model import ModelSpec, load_model, predict
from pipeline.inference.preprocess import BadImage, Preprocessing, decode_jpegs
from pipeline.run import build_inference, run
from pipeline.verify import compare, reference_predictions
from tests.helpers.config import compose_config
from tests.helpers.data import corrupt_images

PIL_PATH = Preprocessing()
TORCHVISION_PATH = Preprocessing(decoder="torchvision")
ON_MODEL_DEVICE = Preprocessing(decoder="torchvision", decode_on="model_device")


def reencoded(data: bytes, mode: str, image_format: str = "JPEG") -> bytes:
    buffer = io.BytesIO()
    Image.open(io.BytesIO(data)).convert(mode).save(buffer, image_format)
    return buffer.getvalue()


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_torchvision_decoding_gives_the_same_crops_as_pillow(mode):
    for index in range(4):
        data = reencoded(synthetic.synth_jpeg(1, index), mode)
        assert torch.equal(TORCHVISION_PATH.crop(data), PIL_PATH.crop(data))


def test_torchvision_decoder_leaves_other_formats_to_pillow():
    png = reencoded(synthetic.synth_jpeg(1, 0), "RGB", "PNG")
    assert torch.equal(TORCHVISION_PATH.crop(png), PIL_PATH.crop(png))


@pytest.mark.parametrize("preprocessing", [TORCHVISION_PATH, PIL_PATH], ids=["torchvision", "pil"])
def test_every_corrupt_image_is_a_bad_image_with_a_reason(preprocessing):
    for data in corrupt_images().values():
        with pytest.raises(BadImage, match="empty|cannot decode"):
            preprocessing.crop(data)


def test_a_batch_decode_lists_each_bad_image_in_place_and_decodes_the_rest():
    good = [synthetic.synth_jpeg(2, i) for i in range(3)]
    images = [good[0], *corrupt_images().values(), good[1], good[2]]
    decoded = decode_jpegs(images, "cpu")
    assert [isinstance(item, BadImage) for item in decoded] == [False, True, True, True, False, False]
    assert torch.equal(decoded[4], TORCHVISION_PATH.decode(good[1]))


def test_a_missing_image_is_a_bad_image_for_every_decoder():
    for preprocessing in (PIL_PATH, TORCHVISION_PATH):
        _, positions, bad = preprocessing.crops([synthetic.synth_jpeg(2, 0), None])
        assert positions == [0] and [position for position, _ in bad] == [1]


def test_decoding_on_the_model_device_defers_the_decode_to_the_model_phase(inference):
    columns = {
        "id": ["a", "b", "c"],
        "label": [1, 2, 3],
        "image": [synthetic.synth_jpeg(2, 0), b"", synthetic.synth_jpeg(2, 1)],
    }
    deferred = replace(inference, preprocessing=ON_MODEL_DEVICE)
    prepared = deferred.crop_batch(columns)
    assert prepared.crops is None and prepared.encoded == columns["image"]
    late, early = deferred.predictions(prepared, "cpu"), inference.predictions(inference.crop_batch(columns), "cpu")
    assert late.positions == early.positions == [0, 2]
    assert [record.id for record in late.bad] == ["b"]
    assert np.array_equal(late.columns["top1"], early.columns["top1"])


def test_the_null_model_answers_class_0_for_every_image_without_weights():
    spec = ModelSpec(name="null_model")
    model = load_model(spec, "cpu")
    predicted = predict(model, torch.randn(5, 3, 224, 224), spec)
    assert predicted.top1.tolist() == [0] * 5
    assert np.allclose(predicted.prob, 1.0)
    assert sum(parameter.numel() for parameter in model.parameters()) == 0


def crops_of(count: int) -> torch.Tensor:
    return PIL_PATH.normalize(torch.stack([PIL_PATH.crop(synthetic.synth_jpeg(4, i)) for i in range(count)]))


def test_channels_last_changes_the_layout_not_the_predictions(weights_file):
    batch = crops_of(8)
    nchw = ModelSpec(weights_file=str(weights_file), channels_last=False)
    nhwc = ModelSpec(weights_file=str(weights_file))
    first, second = predict(load_model(nchw, "cpu"), batch, nchw), predict(load_model(nhwc, "cpu"), batch, nhwc)
    assert np.array_equal(first.top1, second.top1)
    assert np.abs(first.prob - second.prob).max() <= 1e-4


def test_bf16_runs_the_convolutions_in_bfloat16_and_returns_fp32_probabilities(weights_file):
    spec = ModelSpec(weights_file=str(weights_file), precision="bf16")
    model = load_model(spec, "cpu")
    seen = []
    hook = model.conv1.register_forward_hook(lambda module, inputs, output: seen.append(output.dtype))
    try:
        predicted = predict(model, crops_of(2), spec)
    finally:
        hook.remove()
    assert seen == [torch.bfloat16]
    assert predicted.prob.dtype == np.float32 and np.isfinite(predicted.prob).all()


def test_the_reference_is_the_plain_path_whatever_the_options(tiny_dataset, inference, cache_dir):
    fast = replace(
        inference,
        preprocessing=ON_MODEL_DEVICE,
        model=replace(inference.model, precision="bf16", channels_last=False),
    )
    assert reference_predictions(tiny_dataset, fast, cache_dir).equals(
        reference_predictions(tiny_dataset, inference, cache_dir)
    )


@pytest.mark.parametrize(
    "overrides",
    [
        ["preprocess.decoder=torchvision"],
        ["preprocess.decoder=torchvision", "preprocess.decode_on=model_device"],
        ["preprocess.decoder=torchcodec"],
        ["model=null_model"],
    ],
    ids=["torchvision", "model_device", "torchcodec", "null_model"],
)
def test_spark_runs_each_option_and_agrees_with_its_reference(
    spark, tmp_path, tiny_dataset, weights_file, cache_dir, overrides
):
    config = compose_config(*overrides, "warmup=0", "repeats=1", "verify=true")
    configured = build_inference(config, None if "model=null_model" in overrides else weights_file)
    measured = measure(spark, config, tiny_dataset, configured, tmp_path, predict_slots=2)
    assert measured.timed[0].predicted == tiny_dataset.num_images
    agreement = compare(measured.predictions, reference_predictions(tiny_dataset, configured, cache_dir))
    assert agreement["compared"] == tiny_dataset.num_images
    assert agreement["top1_agreement"] == 1.0


def test_a_null_model_run_needs_no_weights_and_says_so(tmp_path, cache_dir):
    config = compose_config(
        "engine=torch",
        "model=null_model",
        f"cache_dir={tmp_path / 'empty-cache'}",
        "warmup=0",
        "repeats=1",
        "dataset.num_images=4",
    )
    result = run(config, tmp_path)
    assert result.status == "ok", result.error
    assert result.env["weights"] == "none" and result.variant.model == "null_model"
    assert not (tmp_path / "empty-cache" / "weights").exists()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["preprocess.decode_on=model_device"], "preprocess.decoder=torchvision"),
        (["preprocess.decoder=torchvision", "preprocess.decode_on=model_device", "topology=split"], "topology=split"),
    ],
)
def test_decoding_on_the_model_device_is_refused_where_it_cannot_apply(overrides, message):
    with pytest.raises(ConfigError, match=message):
        validate(compose_config(*overrides))


def test_compile_wraps_the_model_once_per_process(weights_file):
    spec = ModelSpec(weights_file=str(weights_file), compile=True)
    model = load_model(spec, "cpu")
    assert isinstance(model, torch._dynamo.eval_frame.OptimizedModule)
    assert load_model(spec, "cpu") is model


def test_the_gpu_check_runs_without_spark_or_hydra_and_prints_every_figure():
    script = (
        "import sys, runpy; sys.argv = ['gpu_check', '--device', 'cpu', '--images', '2', '--batch-size', '2', "
        "'--modes', 'fp32', '--repeats', '1']\n"
        "try:\n"
        "    runpy.run_module('pipeline.gpu_check', run_name='__main__')\n"
        "finally:\n"
        "    stack = ('pyspark', 'hydra', 'omegaconf', 'pyarrow', 'py4j')\n"
        "    print('imported:', sorted({m.split('.')[0] for m in sys.modules} & set(stack)), file=sys.stderr)\n"
    )
    finished = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert "imported: []" in finished.stderr
    figures = json.loads(finished.stdout.strip().splitlines()[-1])
    assert {"cpu_decode_crop_pil_per_core", "cpu_decode_crop_torchvision_per_core", "predict_fp32"} <= set(figures)
    assert all(figures[key] > 0 for key in figures if key.startswith(("cpu_", "predict_")))


def test_the_pixel_limit_holds_for_torchvision_and_device_decoding():
    data = synthetic.synth_jpeg(1, 0)  # 300..640 px a side: more than 10,000 pixels
    limited = Preprocessing(decoder="torchvision", max_pixels=10_000)
    with pytest.raises(BadImage, match="preprocess.max_pixels=10000"):
        limited.crop(data)
    _, positions, bad = limited.crops([data], device="meta")  # refused from the header: nothing decoded there
    assert positions == [] and "preprocess.max_pixels=10000" in bad[0][1]


TORCHCODEC_PATH = Preprocessing(decoder="torchcodec")


@pytest.mark.parametrize("mode", ["RGB", "L", "CMYK"])
def test_torchcodec_decoding_gives_the_same_crops_as_pillow(mode):
    pytest.importorskip("torchcodec")
    for index in range(4):  # the tolerance is none: both decode with libjpeg-turbo and convert alike
        data = reencoded(synthetic.synth_jpeg(1, index), mode)
        assert torch.equal(TORCHCODEC_PATH.crop(data), PIL_PATH.crop(data))


def test_torchcodec_bad_images_and_the_pixel_limit():
    pytest.importorskip("torchcodec")
    for data in corrupt_images().values():
        with pytest.raises(BadImage, match="empty|cannot decode"):
            TORCHCODEC_PATH.crop(data)
    with pytest.raises(BadImage, match="preprocess.max_pixels=10000"):
        replace(TORCHCODEC_PATH, max_pixels=10_000).crop(synthetic.synth_jpeg(1, 0))


def test_torchcodec_missing_fails_validation_naming_the_extra(monkeypatch):
    import importlib.util

    config = compose_config("preprocess.decoder=torchcodec")
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *rest: None if name == "torchcodec" else find_spec(name, *rest)
    )
    with pytest.raises(ConfigError, match=r"\.\[torchcodec\]"):
        validate(config)


DECODE_WITH = (
    "import sys\n"
    "from pipeline.data import synthetic\n"
    "data = synthetic.synth_jpeg(1, 0)\n"
    "if sys.argv[1] == 'pipeline':\n"
    "    from pipeline.inference.preprocess import Preprocessing\n"
    "    Preprocessing(decoder='torchvision').crop(data)\n"
    "else:\n"
    "    import torch, torchvision.io\n"
    "    torchvision.io.decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8))\n"
)


@pytest.mark.parametrize(("caller", "warned"), [("pipeline", False), ("torchvision", True)])
def test_torchvision_decoding_prints_no_deprecation_warning_in_a_run(caller, warned):
    # -W default shows every DeprecationWarning once: the torchvision caller proves the warning exists
    finished = subprocess.run(
        [sys.executable, "-W", "default", "-c", DECODE_WITH, caller], capture_output=True, text=True, timeout=300
    )
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert ("DeprecationWarning" in finished.stderr) is warned
