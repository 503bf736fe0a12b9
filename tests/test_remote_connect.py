"""A run through a Spark Connect server on the master's node of the namespace cluster (`tests.helpers.nscluster`):
the job here is a gRPC client only; the server is the driver, on another address, and its executors on two other
nodes see only the shared storage directory. Every UDF style Connect offers and every topology its nodes can run
agree with the in-process reference, every image counted once, their passes in one Connect session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.helpers.nscluster import NamespaceCluster, namespace_cluster, unavailable
from tests.helpers.one_application import assert_every_variant_agrees, in_one_application
from tests.helpers.otherhosts import STYLES, on

pytestmark = pytest.mark.slow

STYLE_RUNS = [f"udf={style}" for style in STYLES if style != "rdd_map_partitions"]  # no RDD API under Connect
# fused: the styles; stage_level schedules by GPUs, which these nodes lack; model_server: test_node_servers
TOPOLOGY_RUNS = ["topology=split", "topology=two_stage"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NamespaceCluster]:
    """A master, two workers of 1 core, the tool installed on them, a storage directory every node and this
    machine share, and a Connect server on the master's node logging its events there (the run's evidence)."""
    reason = unavailable()
    if reason:
        pytest.skip(f"namespace clusters cannot be made here: {reason}")
    directory = tmp_path_factory.mktemp("remote-connect")
    storage = directory / "storage"
    (storage / "events").mkdir(parents=True)
    conf = {
        "spark.executor.cores": "1",
        "spark.executor.memory": "1g",
        "spark.cores.max": "2",
        "spark.eventLog.enabled": "true",
        "spark.eventLog.dir": (storage / "events").as_uri(),
        "spark.eventLog.compress": "false",
        "spark.eventLog.rolling.enabled": "false",
    }
    with namespace_cluster(
        directory / "cluster", workers=2, storage=storage, tool_on_nodes=True, connect=True, connect_conf=conf
    ) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def one_session(server: NamespaceCluster, cache_dir, tmp_path_factory) -> dict:
    """Every style Connect offers and every topology, in one Connect session (tests/helpers/one_application.py: a
    variant does the same in a job's own; whole jobs through a Connect server on the master's node are
    test_ship.py's and test_node_servers.py's). ResNet18: each variant's path through the server is what is proven,
    not the network; its weights are shipped the same way (an artifact). sink=parquet: predictions read back from
    what the pass wrote."""
    overrides = on(server, cache_dir, "model.arch=resnet18", "verify=true", "sink=parquet", master=server.connect_url)
    found = in_one_application(tmp_path_factory.mktemp("one-session"), STYLE_RUNS + TOPOLOGY_RUNS, *overrides)
    assert found["shipped"]["weights"]["how"].startswith("Spark Connect artifact")
    return found


def test_every_udf_style_through_a_connect_server_on_another_node_agrees_with_the_reference(one_session, server):
    workers = {node.hostname for node in server.workers}
    assert_every_variant_agrees(one_session, STYLE_RUNS, workers, images=8)


def test_every_topology_through_a_connect_server_on_another_node_agrees_with_the_reference(one_session, server):
    workers = {node.hostname for node in server.workers}
    assert_every_variant_agrees(one_session, TOPOLOGY_RUNS, workers, images=8)
