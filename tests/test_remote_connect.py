"""A run through a Spark Connect server on the master's node of the namespace cluster (`tests.helpers.nscluster`):
the job here is a gRPC client only; the server is the driver, on another address, and its executors on two other
nodes see only the shared storage directory. Every UDF style Connect offers and every topology agree with the
in-process reference, every image counted once."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.helpers.nscluster import NamespaceCluster, namespace_cluster, unavailable
from tests.helpers.one_application import assert_every_style_agrees, styles_in_one_application
from tests.helpers.otherhosts import STYLES, on, sweep

pytestmark = pytest.mark.slow

CONNECT_STYLES = [style for style in STYLES if style != "rdd_map_partitions"]  # no RDD API under Connect


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


def test_every_udf_style_through_a_connect_server_on_another_node_agrees_with_the_reference(
    server, cache_dir, tmp_path
):
    """Every style Connect offers, in one Connect session (tests/helpers/one_application.py: a style does the same
    in a job's own; whole jobs through the server are the topologies' test). ResNet18: each style's path through
    the server is what is proven, not the network; its weights are shipped the same way (an artifact)."""
    overrides = on(server, cache_dir, "model.arch=resnet18", "verify=true", "sink=parquet", master=server.connect_url)
    found = styles_in_one_application(tmp_path, CONNECT_STYLES, *overrides)
    assert found["shipped"]["weights"]["how"].startswith("Spark Connect artifact")
    workers = {node.hostname for node in server.workers}
    assert_every_style_agrees(found, CONNECT_STYLES, workers, images=8)


@pytest.mark.timeout(1800)  # one whole run per topology, each with its own Spark application
def test_every_topology_through_a_connect_server_on_another_node_agrees_with_the_reference(server, cache_dir, tmp_path):
    events = f"cluster.event_log_dir={server.storage / 'events'}"
    # sink=parquet: verify reads back what the pass wrote instead of running it again. ResNet18, as above.
    shape = ("model.arch=resnet18", "verify=true", "sink=parquet")
    overrides = on(server, cache_dir, events, *shape, master=server.connect_url)
    for name, result in sweep(tmp_path, "topology", ["split", "two_stage"], *overrides).items():
        assert result["status"] == "ok", (name, result["error"])
        assert result["metrics"]["num_predicted"] == 8, name
        assert result["metrics"]["top1_agreement"] == 1.0, name
        assert result["cluster"]["shipped"]["weights"]["how"].startswith("Spark Connect artifact"), name
        assert result["evidence"]["stages"], name  # read from the server's event log on the shared storage
