"""Specification of the user's model (issue 28): any torchvision classifier by `model.arch`, the user's own by
`model.factory`, random weights calibrated for any of them, the crop sizes `preprocess.resize_size` and
`preprocess.crop_size` on every path, and results and reports that name the model."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from torchvision.models import get_model

from pipeline.config.schema import ConfigError
from pipeline.config.validate import validate
from pipeline.data import synthetic, weights
from pipeline.data.weights import calibrate, calibration_images
from pipeline.inference.model import ModelError, ModelSpec, check_model, load_model, predict
from pipeline.inference.networks import FactoryError, call_factory, pretrained
from pipeline.inference.preprocess import Preprocessing
from pipeline.inference.steps import Inference
from pipeline.provenance import model_label, model_record, variant_of
from pipeline.results import model_text
from pipeline.run import build_inference, preprocessing_of
from pipeline.verify import canonical
from reports.aggregate import variant_label, work_text
from tests.helpers import models
from tests.helpers.config import compose_config

TINY = "tests.helpers.models:tiny"
SMALL = Preprocessing(resize_size=56, crop_size=48)  # small crops keep every network here fast on a CPU


def predictions_of(model: torch.nn.Module, preprocessing: Preprocessing = SMALL, images: int = 16) -> list[int]:
    """Top-1 classes of `images` synthetic photos (none of them a calibration photo)."""
    crops = torch.stack([preprocessing.crop(synthetic.synth_jpeg(0, i)) for i in range(images)])
    return predict(model.eval(), preprocessing.normalize(crops), ModelSpec(channels_last=False)).top1.tolist()


# --- model.arch and model.factory at validation --------------------------------------------------------------------
def test_a_torchvision_architecture_other_than_resnet50_validates():
    validate(compose_config("model.arch=efficientnet_b0", "engine=torch"))


def test_an_unknown_architecture_is_refused_naming_the_key_close_names_and_a_few_valid_ones():
    with pytest.raises(ConfigError) as refused:
        validate(compose_config("model.arch=resnet19", "engine=torch"))
    message = str(refused.value)
    assert message.startswith("model.arch=resnet19: not a torchvision classification model")
    assert "did you mean resnet18" in message
    assert "efficientnet_b0" in message and "vit_b_16" in message


@pytest.mark.parametrize(
    ("factory", "named"),
    [
        ("tests.helpers.no_such_module:tiny", "cannot import tests.helpers.no_such_module"),
        ("tests.helpers.models:no_such_function", "tests.helpers.models has no function no_such_function"),
        ("tests.helpers.models", "expected package.module:function"),
    ],
)
def test_a_factory_that_cannot_be_imported_is_refused_naming_the_key(factory, named):
    with pytest.raises(ConfigError) as refused:
        validate(compose_config(f"model.factory={factory}", "engine=torch"))
    assert str(refused.value).startswith(f"model.factory={factory}: ")
    assert named in str(refused.value)


def test_a_factory_import_error_says_where_the_module_must_be_importable():
    with pytest.raises(ConfigError, match="importable in the driver and wherever the model runs"):
        validate(compose_config("model.factory=tests.helpers.no_such_module:tiny", "engine=torch"))


def test_a_factory_that_returns_no_module_fails_naming_the_key():
    with pytest.raises(FactoryError, match="model.factory=tests.helpers.models:not_a_model: returned str"):
        call_factory("tests.helpers.models:not_a_model", 0)


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ([f"model.factory={TINY}", "model.arch=resnet18"], "the factory builds the network"),
        (["model=null_model", "model.arch=resnet18"], "model.arch=resnet18 with model=null_model: the null model"),
        (["model=accelerator", f"model.factory={TINY}"], "device's profiles (conf/device/) are ResNet50 figures"),
        (["model.weights=factory"], "model.weights=factory (the factory's own weights) needs model.factory"),
        (["preprocess.crop_size=300"], "preprocess.crop_size=300 > preprocess.resize_size=256"),
        (["preprocess.crop_size=0"], "preprocess.crop_size=0: must be an integer >= 1"),
    ],
)
def test_validate_refuses_model_combinations(overrides, named):
    with pytest.raises(ConfigError, match=named.replace(".", r"\.").replace("(", r"\(").replace(")", r"\)")):
        validate(compose_config(*overrides, "engine=torch"))


# --- random weights for any network ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("arch", "options"),
    [
        ("resnet18", {}),
        ("efficientnet_b0", {}),
        ("vit_b_16", {"image_size": SMALL.crop_size}),  # BatchNorm-free, and its head starts at zero
        ("squeezenet1_1", {}),  # its classifier is a 1x1 convolution, then ReLU and pooling
    ],
)
def test_calibrated_random_networks_predict_different_classes_for_different_images(arch, options):
    torch.manual_seed(0)
    model = get_model(arch, weights=None, **options)
    calibrate(model, calibration_images(0, SMALL))
    # Measured at these sizes: 16, 15, 15 and 7 distinct classes over 16 images; uncalibrated ViT and SqueezeNet
    # predict one class for all of them.
    assert len(set(predictions_of(model))) >= 5


def test_a_calibrated_random_factory_model_predicts_different_classes_for_different_images():
    model = call_factory(TINY, 0)
    calibrate(model, calibration_images(0, SMALL))
    assert len(set(predictions_of(model))) >= 4  # of its ten classes


@pytest.fixture(scope="module")
def resnet18_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache holding ResNet18's random weights at the small sizes."""
    cache = tmp_path_factory.mktemp("cache")
    weights.resolve("random", 0, cache, arch="resnet18", preprocessing=SMALL)
    return cache


def test_random_weights_are_cached_per_architecture_and_seed(resnet18_cache):
    resnet18 = resnet18_cache / "weights" / "resnet18-random-seed0-resize56-crop48-v1.pt"
    written = resnet18.stat().st_mtime_ns
    assert weights.resolve("random", 0, resnet18_cache, arch="resnet18", preprocessing=SMALL) == resnet18
    assert resnet18.stat().st_mtime_ns == written
    assert weights.random_name(1, "resnet18", None, SMALL) != resnet18.name
    assert weights.random_name(0, "resnet34", None, SMALL) != resnet18.name
    assert weights.random_name(0, "resnet50", None, Preprocessing()) == "resnet50-random-seed0-v1.pt"  # as always


def test_random_weights_of_an_architecture_load_into_it(resnet18_cache):
    path = weights.resolve("random", 0, resnet18_cache, arch="resnet18", preprocessing=SMALL)
    spec = ModelSpec(arch="resnet18", weights_file=str(path), channels_last=False)
    assert len(set(predictions_of(load_model(spec, "cpu")))) >= 5


def test_a_factory_s_random_weights_are_keyed_by_its_initial_weights(tmp_path):
    tiny = weights.resolve("random", 0, tmp_path, factory=TINY, preprocessing=SMALL)
    wider = weights.resolve("random", 0, tmp_path, factory="tests.helpers.models:wider", preprocessing=SMALL)
    assert tiny.name.startswith("factory-tests.helpers.models.tiny-")
    assert tiny.parent == wider.parent and tiny != wider
    assert weights.resolve("random", 0, tmp_path, factory=TINY, preprocessing=SMALL) == tiny


def test_random_weights_depend_on_the_crop_sizes_only_not_the_image_format_or_decoder(tmp_path):
    raw = Preprocessing(image_format="raw", decoder="torchvision", resize_size=56, crop_size=48)
    assert weights.resolve("random", 0, tmp_path, factory=TINY, preprocessing=raw) == weights.resolve(
        "random", 0, tmp_path, factory=TINY, preprocessing=SMALL
    )
    assert torch.equal(calibration_images(0, raw), calibration_images(0, SMALL))


def test_a_factory_s_own_weights_have_no_file_and_are_the_same_in_every_build(tmp_path):
    assert weights.resolve("factory", 3, tmp_path, factory=TINY) is None
    first, second = call_factory(TINY, 3).state_dict(), call_factory(TINY, 3).state_dict()
    assert all(torch.equal(first[name], second[name]) for name in first)
    assert not torch.equal(call_factory(TINY, 4).state_dict()["8.weight"], first["8.weight"])


def test_a_missing_weights_file_names_the_network(tmp_path):
    with pytest.raises(weights.WeightsNotFound, match=r"\(model\.arch=resnet18\): no such file"):
        weights.resolve(str(tmp_path / "missing.pt"), 0, tmp_path, arch="resnet18")


# --- torchvision's pretrained weights -------------------------------------------------------------------------------
def test_torchvision_weights_load_from_any_file_name_through_torchvision_s_builder(tmp_path):
    torch.manual_seed(5)
    state = get_model("resnet18", weights=None).state_dict()
    checkpoint = tmp_path / "shipped-copy.pth"
    torch.save(state, checkpoint)
    hub_before = torch.hub.get_dir()
    model = pretrained("resnet18", "IMAGENET1K_V1", checkpoint)
    assert torch.equal(model.state_dict()["fc.weight"], state["fc.weight"])
    assert torch.hub.get_dir() == hub_before


def test_a_torchvision_weights_name_is_an_architecture_s_own(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    assert weights.weights_kind("IMAGENET1K_SWAG_E2E_V1", "vit_b_16") == "torchvision"
    assert weights.weights_kind("IMAGENET1K_SWAG_E2E_V1", "resnet18") == "file"
    with pytest.raises(weights.WeightsNotFound, match="model.arch=vit_b_16"):
        weights.resolve("IMAGENET1K_SWAG_E2E_V1", 0, tmp_path, arch="vit_b_16")


# --- the driver's check of the network -----------------------------------------------------------------------------
def test_the_check_reports_classes_and_parameters():
    facts = check_model(ModelSpec(factory=TINY, channels_last=False), 32)
    assert facts.classes == models.CLASSES
    assert facts.parameters == sum(p.numel() for p in models.tiny().parameters())


def test_weights_that_do_not_fit_the_network_fail_naming_it(weights_file):
    with pytest.raises(ModelError, match="do not fit model.arch=resnet18"):
        check_model(ModelSpec(arch="resnet18", weights_file=str(weights_file)), 224)


def test_a_crop_the_network_refuses_fails_naming_the_crop_size():
    with pytest.raises(ModelError, match=r"model\.arch=vit_b_16 fails on a 3x160x160 crop \(preprocess\.crop_size"):
        check_model(ModelSpec(arch="vit_b_16"), 160)


@pytest.mark.parametrize(
    ("factory", "named"),
    [("pair", "returns tuple"), ("three_classes", "shape (1, 3) for one image")],
)
def test_an_output_that_is_not_logits_of_five_classes_or_more_fails(factory, named):
    with pytest.raises(ModelError, match=named.replace("(", r"\(").replace(")", r"\)")):
        check_model(ModelSpec(factory=f"tests.helpers.models:{factory}"), 32)


# --- the crop sizes on every path ------------------------------------------------------------------------------------
def test_the_crop_sizes_reach_the_tasks_preprocessing():
    config = compose_config("preprocess.resize_size=72", "preprocess.crop_size=64")
    inference = build_inference(config, None)
    assert (inference.preprocessing.resize_size, inference.preprocessing.crop_size) == (72, 64)
    crops, _, _ = inference.preprocessing.crops([synthetic.synth_jpeg(0, 0)])
    assert crops.shape == (1, 3, 64, 64)


def test_crop_bytes_of_a_smaller_crop_read_back_as_the_same_crops():
    """two_stage's and split's crop bytes are the crop size's, whatever it is."""
    inference = Inference(preprocessing=SMALL, model=ModelSpec(name="null_model"), batch_size=4)
    images = [synthetic.synth_jpeg(0, i) for i in range(3)]
    prepared = inference.crop_batch({"id": ["a", "b", "c"], "label": [0, 1, 2], "image": images})
    written = inference.crop_bytes(prepared).columns
    assert len(written["crop"][0]) == 3 * 48 * 48
    assert torch.equal(inference.read_crops(written).crops, prepared.crops)


def test_the_reference_keeps_the_crop_sizes_and_the_network():
    config = compose_config(f"model.factory={TINY}", "preprocess.resize_size=72", "preprocess.crop_size=64")
    inference = canonical(build_inference(config, Path("/weights.pt")))
    assert (inference.preprocessing.resize_size, inference.preprocessing.crop_size) == (72, 64)
    assert inference.model.factory == TINY and inference.model.weights_file == "/weights.pt"


def test_the_model_server_rebuilds_the_same_spec_from_its_json():
    spec = build_inference(compose_config("model.arch=resnet18", "model.seed=3"), Path("/w.pt")).model
    assert ModelSpec(**json.loads(json.dumps(asdict(spec)))) == spec


def test_default_sizes_are_resnet50_s_256_and_224():
    preprocessing = preprocessing_of(compose_config())
    assert (preprocessing.resize_size, preprocessing.crop_size) == (256, 224)


# --- results and reports name the model ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("overrides", "name", "label"),
    [
        ([], "resnet50", "resnet50 (random weights)"),
        (["model.arch=resnet18"], "resnet18", "resnet18 (random weights)"),
        ([f"model.factory={TINY}", "model.weights=factory"], f"factory {TINY}", f"factory {TINY} (the factory's own"),
        (["model=null_model"], "null_model", "null_model (no weights)"),
    ],
)
def test_a_result_names_the_model_and_its_weights(overrides, name, label):
    config = compose_config(*overrides)
    assert variant_of(config).model == name
    assert model_label(config).startswith(label)
    assert model_record(config)["name"] == name


def test_the_model_section_records_the_network_and_its_input():
    record = model_record(compose_config("model.arch=resnet18", "preprocess.crop_size=160"))
    assert record["arch"] == "resnet18" and record["factory"] is None and record["weights"] == "random"
    assert record["input"] == [3, 160, 160] and record["resize_size"] == 256
    assert model_text({**record, "parameters": 11_689_512, "classes": 1000}) == (
        "resnet18 (random weights), input 3x160x160 (resize 256), 11.7 M parameters, 1000 classes"
    )


def test_crop_sizes_are_variant_fields_only_when_not_the_defaults():
    assert variant_of(compose_config()).crop_size is None
    assert variant_of(compose_config("preprocess.crop_size=160")).crop_size == 160


def test_a_report_label_always_names_a_network_other_than_resnet50():
    variant = asdict(variant_of(compose_config("model.arch=resnet18")))
    assert "model=resnet18" in variant_label(variant, [])
    assert "model=" not in variant_label(asdict(variant_of(compose_config())), [])


def test_a_comparison_s_work_names_the_model_and_a_non_default_input():
    work = asdict(variant_of(compose_config("model.arch=resnet18", "preprocess.crop_size=160")))
    text = work_text({**work, "num_images": 16, "hostname": "here"})
    assert text.startswith("resnet18 (fp32), input 160 px (resize 256), random weights")
