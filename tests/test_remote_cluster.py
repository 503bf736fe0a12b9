"""A run on a cluster of other machines: the namespace cluster of `tests.helpers.nscluster`, whose nodes have
addresses, hostnames and filesystems of their own, and see only the shared storage directory of this machine.

What a new user met there before (issue 26): a driver on 127.0.0.1 the executors could not reach (the run hung),
the weights file in the driver's cache dir (every task failed), the tasks' records in each node's view of the
run dir (0 images counted). Each test is a whole `python -m pipeline` in a subprocess, as a user runs it, but
the styles' and the topologies' tests: their passes in one application (tests/helpers/one_application.py).
"""

from __future__ import annotations

import pytest

from pipeline.runtime.process_cpu import EXECUTOR_JVMS, PYTHON_WORKERS
from tests.helpers.nscluster import NamespaceCluster
from tests.helpers.one_application import assert_every_variant_agrees, in_one_application
from tests.helpers.otherhosts import DATA, STYLES, left_on, made_here, on, run

pytestmark = pytest.mark.slow

TOPOLOGIES = ["split", "two_stage", "stage_level"]  # fused: the styles test; model_server: test_node_servers
STYLE_RUNS = [f"udf={style}" for style in STYLES]  # fused
TOPOLOGY_RUNS = [f"topology={topology}" for topology in TOPOLOGIES]  # map_in_pandas


@pytest.fixture
def nodes(tool_nodes: NamespaceCluster) -> NamespaceCluster:
    """The session's cluster (tests/conftest.py): a master and two workers of 1 core and 1 emulated GPU each, the
    tool installed on them, and a storage directory every node and this machine share, with the runs' data set
    made on it by this process (`made_here`; a cluster's generation, an application of its own, is
    test_scaling.py's)."""
    made_here(tool_nodes.storage, *DATA)
    return tool_nodes


def test_a_run_on_other_machines_counts_every_image_and_agrees_with_the_reference(nodes, cache_dir, tmp_path):
    result = run(tmp_path, *on(nodes, cache_dir, "verify=true"))
    assert result["status"] == "ok", result["error"]
    assert result["metrics"]["num_predicted"] == 8 and result["metrics"]["top1_agreement"] == 1.0
    assert result["spark_conf"]["spark.driver.host"] == nodes.driver_address
    assert result["cluster"]["shipped"]["weights"]["how"] == "SparkContext.addFile"
    assert result["dataset"]["path"].startswith(str(nodes.storage))
    assert len({task["executor_id"] for task in result["evidence"]["timeline"]}) == 2  # one task on each node
    # the executors' CPU, which the driver's process tree does not reach, read by their tasks on the nodes
    assert len(result["tasks"]["executor_cpu"]) == 2
    cpu = result["metrics"]["process_cpu_s"]
    assert min(cpu[PYTHON_WORKERS]) > 0 and EXECUTOR_JVMS in cpu  # a JVM's 4 images may take under a tick
    assert not left_on(nodes), "the run's executors outlived it"


def test_executors_that_cannot_reach_the_driver_fail_the_run_in_bounded_time_naming_why(nodes, cache_dir, tmp_path):
    overrides = on(
        nodes, cache_dir, "model=null_model", "cluster.driver_host=127.0.0.1", "cluster.register_timeout_s=20"
    )
    result = run(tmp_path, *overrides, timeout=240)
    assert result["status"] == "failed" and result["error"]["type"] == "ExecutorsMissing"
    message = result["error"]["message"]
    assert "0 of 2 executors" in message and "after 20 s (cluster.register_timeout_s)" in message
    assert "exited before registering" in message and "spark://CoarseGrainedScheduler@127.0.0.1:" in message


def test_records_the_driver_cannot_read_fail_the_run_naming_the_storage_key(nodes, cache_dir, tmp_path):
    """The data set on the shared storage, but no storage root: the tasks write their records into their own
    node's view of the run dir."""
    shared = made_here(nodes.storage, *DATA)  # the `nodes` fixture's
    overrides = [o for o in on(nodes, cache_dir, "model=null_model") if not o.startswith(("storage=", "dataset."))]
    result = run(tmp_path, *overrides, "dataset=parquet", f"dataset.path={shared.path}")
    assert result["status"] == "failed" and result["error"]["type"] == "TasksUnheard"
    assert "set storage=DIR" in result["error"]["message"]


@pytest.fixture(scope="module")
def one_application(tool_nodes: NamespaceCluster, cache_dir, tmp_path_factory) -> dict:
    """Every style's and every topology's passes on the worker nodes, in one application
    (tests/helpers/one_application.py: a variant does the same in a job's own; the whole job on other machines is
    the first test's). ResNet18: each variant's path on other machines is what is proven, not the network
    (ResNet50's is, by the first test); its weights are shipped the same way, and its passes are shorter.
    sink=parquet: predictions read back from what the pass wrote."""
    made_here(tool_nodes.storage, *DATA)
    overrides = on(tool_nodes, cache_dir, "model.arch=resnet18", "verify=true", "sink=parquet", "gpu.emulate=1")
    found = in_one_application(tmp_path_factory.mktemp("one-application"), STYLE_RUNS + TOPOLOGY_RUNS, *overrides)
    assert found["shipped"]["weights"]["how"] == "SparkContext.addFile"
    return found


def test_every_udf_style_on_other_machines_agrees_with_the_reference(one_application, tool_nodes):
    workers = {node.hostname for node in tool_nodes.workers}
    assert_every_variant_agrees(one_application, STYLE_RUNS, workers, images=8)
    assert not left_on(tool_nodes), "the application's executors outlived it"


def test_every_topology_on_other_machines_agrees_with_the_reference(one_application, tool_nodes):
    workers = {node.hostname for node in tool_nodes.workers}
    assert_every_variant_agrees(one_application, TOPOLOGY_RUNS, workers, images=8)
