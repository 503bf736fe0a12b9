"""What executors get from the driver when they may see nothing of its disk: the weights file, shipped with the
application and opened where the task runs; by `cluster.ship`, the tool's code as a zip or this virtualenv packed,
each made once per content, and the confs each mode starts an application with."""

from __future__ import annotations

import pickle
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException

from pipeline.config.schema import ConfigError, Ship
from pipeline.config.validate import validate
from pipeline.inference.model import ModelSpec
from pipeline.inference.preprocess import Preprocessing
from pipeline.inference.steps import Inference
from pipeline.spark.cluster import cluster
from pipeline.spark.session import spark_conf
from pipeline.spark.shipping import (
    CODE_PACKAGES,
    Shipment,
    SparkFile,
    code_packages,
    code_zip,
    environment_key,
    pack_environment,
    ship_file,
    ship_weights,
    shipment,
    site_packages,
)
from tests.helpers.config import compose_config


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


# ------------------------------------------------------------------------- cluster.ship: the tool's code, its env


def test_the_code_zip_holds_the_packages_the_tasks_import_and_nothing_of_the_drivers(tmp_path):
    names = set(zipfile.ZipFile(code_zip(tmp_path).path).namelist())
    assert {
        "pipeline/__init__.py",
        "pipeline/spark/preflight.py",
        "variants/__init__.py",
        "variants/topology.py",
    } <= names
    assert {name.split("/")[0] for name in names} == set(CODE_PACKAGES) == {"pipeline", "variants"}
    assert not [name for name in names if "__pycache__" in name or name.endswith(".pyc")]


def test_python_imports_the_tool_from_the_code_zip(tmp_path):
    path = code_zip(tmp_path).path
    script = f"import sys; sys.path.insert(0, {str(path)!r}); import pipeline.spark.preflight as p; print(p.__file__)"
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"{path}/pipeline/spark/preflight.py"


def _package(root: Path, text: str) -> None:
    (root / "shipme").mkdir(parents=True, exist_ok=True)
    (root / "shipme" / "__init__.py").write_text(text)


def test_the_code_zip_is_made_once_per_content_of_the_tree(tmp_path, monkeypatch):
    _package(tmp_path / "src", "A = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path / "src"))
    first = code_zip(tmp_path / "cache", ("shipme",))
    again = code_zip(tmp_path / "cache", ("shipme",))
    _package(tmp_path / "src", "A = 2\n")
    changed = code_zip(tmp_path / "cache", ("shipme",))
    assert (first.cached, again.cached, changed.cached) == (False, True, False)
    assert again.path == first.path != changed.path
    assert first.path.read_bytes() == again.path.read_bytes()  # no clock in the zip: the bytes decide


def test_a_factory_s_top_level_package_goes_in_the_code_zip(tmp_path):
    config = compose_config("model.factory=tests.helpers.models:tiny")
    assert code_packages(config) == (*CODE_PACKAGES, "tests")
    assert code_packages(compose_config()) == CODE_PACKAGES
    assert "tests/helpers/models.py" in zipfile.ZipFile(code_zip(tmp_path, code_packages(config)).path).namelist()


def test_a_factory_in_a_top_level_module_goes_in_the_code_zip_as_that_file(tmp_path, monkeypatch):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "mymodels.py").write_text("def tiny(): ...\n")
    (tmp_path / "src" / "unrelated.txt").write_text("not shipped\n")
    monkeypatch.syspath_prepend(str(tmp_path / "src"))
    names = zipfile.ZipFile(code_zip(tmp_path / "cache", ("mymodels",)).path).namelist()
    assert names == ["mymodels.py"]


def _venv(path: Path) -> Path:
    """A virtualenv without pip, with the hook an editable install leaves, and one distribution."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True, timeout=120)
    site = site_packages(path)[0]
    (site / "__editable__.tool-0.1.pth").write_text(
        "import __editable___tool_finder; __editable___tool_finder.install()\n"
    )
    (site / "__editable___tool_finder.py").write_text("MAPPING = {'pipeline': '/the/driver/checkout/pipeline'}\n")
    _distribution(site, "somelib", "1.0")
    return path


def _distribution(site: Path, name: str, version: str) -> None:
    info = site / f"{name}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")


def test_a_packed_environment_keeps_its_interpreter_link_and_pyvenv_cfg_and_leaves_the_editable_hook_out(tmp_path):
    venv = _venv(tmp_path / "venv")
    made = pack_environment(tmp_path / "cache", venv)
    assert made.path.name.endswith(".tar.gz") and not made.cached
    with tarfile.open(made.path, "r:gz") as archive:
        members = {member.name: member for member in archive.getmembers()}
    assert members["bin/python"].issym() and "pyvenv.cfg" in members
    assert not [name for name in members if name.startswith(("/", "./"))]  # Spark unpacks under environment/
    assert not [name for name in members if "__editable__" in name]
    assert any(name.endswith("somelib-1.0.dist-info/METADATA") for name in members)


def test_an_environment_is_packed_once_per_set_of_distributions_and_its_old_archive_removed(tmp_path):
    venv = _venv(tmp_path / "venv")
    first = pack_environment(tmp_path / "cache", venv)
    again = pack_environment(tmp_path / "cache", venv)
    _distribution(site_packages(venv)[0], "otherlib", "2.0")
    changed = pack_environment(tmp_path / "cache", venv)
    assert (first.cached, again.cached, changed.cached) == (False, True, False)
    assert again.path == first.path != changed.path
    assert not first.path.exists() and changed.path.exists()
    assert "otherlib==2.0" in environment_key(venv)["distributions"]


def _config(*overrides: str):
    return compose_config("cluster=remote", "cluster.master=spark://10.0.0.2:7077", *overrides)


def test_installed_ships_nothing_and_starts_no_differently(tmp_path):
    made = shipment(_config(f"cache_dir={tmp_path}"), remote=True)
    assert made == Shipment(Ship.installed) and made.startup_conf(connect=False) == {}


def test_code_ships_the_zip_once_the_session_is_up_and_changes_no_startup_conf(tmp_path):
    made = shipment(_config("cluster.ship=code", f"cache_dir={tmp_path}"), remote=True)
    assert made.code is not None and made.code.path.parent == tmp_path / "shipped" and made.environment is None
    assert made.startup_conf(connect=False) == {} == made.startup_conf(connect=True)


def test_env_starts_a_classic_application_with_the_archive_and_its_python(tmp_path, monkeypatch):
    monkeypatch.setattr("pipeline.spark.shipping.sys.prefix", str(_venv(tmp_path / "venv")))
    made = shipment(_config("cluster.ship=env", f"cache_dir={tmp_path / 'cache'}"), remote=True)
    assert made.code is not None and made.environment is not None
    assert made.startup_conf(connect=False) == {
        "spark.archives": f"{made.environment.path}#environment",
        "spark.pyspark.python": "./environment/bin/python",
    }
    assert made.startup_conf(connect=True) == {}  # under Connect: addArtifacts and a session conf, once up


def test_modes_on_this_machine_ship_nothing(tmp_path):
    config = compose_config("cluster=standalone", f"cache_dir={tmp_path}")
    assert shipment(config, remote=False) == Shipment(Ship.installed)


def test_the_startup_confs_of_env_are_recorded_with_the_applications(tmp_path):
    config = _config("cluster.ship=env")
    with cluster(config, tmp_path) as running:
        conf = spark_conf(config, tmp_path, 2**20, running, None, {"spark.archives": "/x.tar.gz#environment"})
    assert conf["spark.archives"] == "/x.tar.gz#environment"


def test_cluster_ship_takes_only_its_three_values():
    with pytest.raises(ConfigCompositionException) as refused:
        compose_config("cluster=remote", "cluster.master=spark://x:7077", "cluster.ship=zip")
    assert "Invalid value 'zip', expected one of [installed, code, env]" in str(refused.value.__cause__)


def test_cluster_ship_is_a_key_of_cluster_remote_only():
    with pytest.raises(ConfigCompositionException, match="cluster.ship"):
        compose_config("cluster=standalone", "cluster.ship=code")


def test_env_is_refused_outside_a_virtualenv(monkeypatch):
    monkeypatch.setattr("pipeline.spark.plan.sys.prefix", sys.base_prefix)
    with pytest.raises(ConfigError, match=r"cluster.ship=env packs this Python's virtualenv"):
        validate(_config("cluster.ship=env"))


def test_a_preflight_bound_of_zero_is_refused():
    with pytest.raises(ConfigError, match=r"cluster.preflight_timeout_s=0.0: must be > 0"):
        validate(_config("cluster.preflight_timeout_s=0"))


@pytest.mark.parametrize("key", ["spark.archives", "spark.pyspark.python"])
def test_spark_conf_cannot_set_what_cluster_ship_sets(key):
    with pytest.raises(ConfigError, match=rf"spark.conf sets {key}: set cluster.ship=\.\.\. instead"):
        validate(_config(f"+spark.conf={{{key}: x}}"))


def test_a_partial_archive_whose_packer_died_is_removed_when_the_next_pack_starts(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    (tmp_path / "cache").mkdir()
    abandoned = tmp_path / "cache" / f".env-0123.tar.gz.{dead.pid}.tmp"
    abandoned.write_bytes(b"half an archive")
    pack_environment(tmp_path / "cache", _venv(tmp_path / "venv"))
    assert not abandoned.exists()
